namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A listener on the IPv6 any-address takes IPv4 clients too (dual mode) by default; <see cref="ListenerOptions.DualMode"/> = false
/// makes it IPv6-only. Skipped with the reason where this machine has no IPv6.
/// </summary>
public class DualModeTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_listener_on_IPv6Any_serves_IPv4_and_IPv6_clients_by_default(EventLoopBackend backend)
    {
        SkipUnlessIpv6();
        var handler = new EchoHandler();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), handler);
        int port = ((IPEndPoint)listener.LocalEndPoint).Port;

        AssertEchoes(new IPEndPoint(IPAddress.Loopback, port), 1);
        AssertEchoes(new IPEndPoint(IPAddress.IPv6Loopback, port), 2);
        LoopHarness.WaitUntil(() => handler.Connected == 2, "both clients accepted");
        Assert.Empty(handler.OptionFailures);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void With_DualMode_off_an_IPv4_client_is_refused_and_an_IPv6_one_served(EventLoopBackend backend)
    {
        SkipUnlessIpv6();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), new EchoHandler(), new ListenerOptions { DualMode = false });
        int port = ((IPEndPoint)listener.LocalEndPoint).Port;

        AssertEchoes(new IPEndPoint(IPAddress.IPv6Loopback, port), 3);
        using var ipv4 = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var error = Assert.Throws<SocketException>(() => ipv4.Connect(new IPEndPoint(IPAddress.Loopback, port)));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
    }

    [SkippableFact]
    public void With_DualMode_off_an_IPv4_listener_can_take_the_same_port()
    {
        SkipUnlessIpv6();
        using var loop = new EventLoop();
        using var harness = new LoopHarness(loop);
        using var v6 = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), new EchoHandler(), new ListenerOptions { DualMode = false });
        int port = ((IPEndPoint)v6.LocalEndPoint).Port;
        using var v4 = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Any, port), new EchoHandler());
        AssertEchoes(new IPEndPoint(IPAddress.Loopback, port), 4);
        AssertEchoes(new IPEndPoint(IPAddress.IPv6Loopback, port), 5);
        LoopHarness.WaitUntil(() => v4.AcceptedCount == 1 && v6.AcceptedCount == 1, "each listener got its family's client");
    }

    [SkippableFact]
    public void With_DualMode_on_an_IPv4_listener_on_the_same_port_fails_with_address_in_use()
    {
        SkipUnlessIpv6();
        using var loop = new EventLoop();
        using var v6 = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), new EchoHandler());
        int port = ((IPEndPoint)v6.LocalEndPoint).Port;
        var error = Assert.Throws<SocketException>(() => ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Any, port), new EchoHandler()));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    private static void SkipUnlessIpv6()
    {
        string? reason = null;
        try
        {
            using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        }
        catch (SocketException e)
        {
            reason = "IPv6 is unavailable here (binding ::1 failed: " + e.SocketErrorCode + ")";
        }

        Skip.If(reason is not null, reason);
    }

    private static void AssertEchoes(IPEndPoint endPoint, int seed)
    {
        using var client = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5_000 };
        client.Connect(endPoint);
        byte[] data = SocketTestExtensions.Pattern(seed, 1000);
        client.Send(data);
        Assert.True(data.AsSpan().SequenceEqual(client.ReceiveExactly(data.Length)), $"the echo over {endPoint} matches");
    }
}
