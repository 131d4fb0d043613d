namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A second server on an address that a running one holds fails with address-in-use, whatever the accept mode and the
/// number of loops; sharing a port through <c>SO_REUSEPORT</c> happens only when the user asks for it.
/// </summary>
public class AddressInUseTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_second_listener_on_a_held_address_fails_with_address_in_use(EventLoopBackend backend)
    {
        using var first = new EchoServer(backend, new EchoHandler());
        using EventLoop loop = Backends.CreateLoop(backend);
        var error = Assert.Throws<SocketException>(() => ConnectionListener.Listen(loop, first.EndPoint, new EchoHandler()));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    [Fact]
    public void A_listener_on_an_address_a_plain_socket_holds_fails_with_address_in_use()
    {
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        holder.Listen(8);
        using var loop = new EventLoop();
        var error = Assert.Throws<SocketException>(() => ConnectionListener.Listen(loop, holder.LocalEndPoint!, new EchoHandler()));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    [Theory]
    [InlineData(GroupAcceptMode.Auto)]
    [InlineData(GroupAcceptMode.ReusePort)]
    [InlineData(GroupAcceptMode.SingleAcceptor)]
    public void A_second_group_on_a_held_address_fails_with_address_in_use(GroupAcceptMode mode)
    {
        using var first = new EventLoopGroup(2);
        var listeners = first.Listen(new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), mode: mode);
        EndPoint held = listeners[0].LocalEndPoint;

        using var second = new EventLoopGroup(2);
        var error = Assert.Throws<SocketException>(() => second.Listen(held, new EchoHandler(), mode: mode));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
        Assert.Empty(second.Listeners);

        // The first group still serves every client (none went to the failed second one).
        for (int i = 0; i < 8; i++)
        {
            using Socket client = EchoServer.ConnectTo(held, 5_000);
            client.Send(new byte[] { (byte)i });
            Assert.Equal((byte)i, client.ReceiveExactly(1)[0]);
        }
    }

    [Theory]
    [InlineData(GroupAcceptMode.Auto)]
    [InlineData(GroupAcceptMode.ReusePort)]
    public void A_group_on_an_address_a_single_listener_holds_fails_with_address_in_use(GroupAcceptMode mode)
    {
        using var loop = new EventLoop();
        using var harness = new LoopHarness(loop);
        using var held = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler());
        using var group = new EventLoopGroup(2);
        var error = Assert.Throws<SocketException>(() => group.Listen(held.LocalEndPoint, new EchoHandler(), mode: mode));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    [Fact]
    public void A_plain_socket_cannot_join_a_group_listening_in_reuse_port_mode()
    {
        using var group = new EventLoopGroup(2);
        var listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), mode: GroupAcceptMode.ReusePort);
        Assert.Equal(2, listeners.Count);
        using var intruder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        intruder.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
        var error = Assert.Throws<SocketException>(() => intruder.Bind(listeners[0].LocalEndPoint));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    /// <summary>.NET's <c>SocketOptionName.ReuseAddress</c> sets <c>SO_REUSEPORT</c> too on Linux; a listener with default options does not, so even such a socket cannot bind its address.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_socket_with_dotnet_ReuseAddress_cannot_bind_where_a_default_listener_listens(EventLoopBackend backend)
    {
        using var server = new EchoServer(backend, new EchoHandler());
        using var intruder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        intruder.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        var error = Assert.Throws<SocketException>(() => intruder.Bind(server.EndPoint));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    // Linux values from <asm-generic/socket.h>.
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    [Fact]
    public void Explicit_ReusePort_lets_two_listeners_share_a_port_and_both_get_clients()
    {
        var options = new ListenerOptions { ReusePort = true };
        var firstHandler = new EchoHandler();
        var secondHandler = new EchoHandler();
        using var loop = new EventLoop();
        using var harness = new LoopHarness(loop);
        using var first = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), firstHandler, options);
        using var second = ConnectionListener.Listen(loop, first.LocalEndPoint, secondHandler, options);

        // The kernel spreads by a hash of the client's address and port: over 64 clients both get some.
        for (int i = 0; i < 64; i++)
        {
            using Socket client = EchoServer.ConnectTo(first.LocalEndPoint, 5_000);
            client.Send(new byte[] { 1 });
            client.ReceiveExactly(1);
        }

        LoopHarness.WaitUntil(() => first.AcceptedCount + second.AcceptedCount == 64, "64 connections accepted");
        Assert.True(first.AcceptedCount > 0 && second.AcceptedCount > 0, $"first {first.AcceptedCount}, second {second.AcceptedCount}");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_restarted_server_binds_its_port_while_old_connections_are_in_TIME_WAIT(EventLoopBackend backend)
    {
        EndPoint endPoint;
        var handler = new CloseAfterFirstByteHandler();
        using (var server = new EchoServer(backend, handler))
        {
            endPoint = server.EndPoint;
            using Socket client = server.Connect();
            client.Send(new byte[] { 1 });

            // The server closes first, so the TIME_WAIT state is on the server's side of the port.
            Assert.Empty(client.ReceiveToEnd());
            client.Shutdown(SocketShutdown.Send);
            LoopHarness.WaitUntil(() => handler.Closed == 1, "the server closes the connection");
        }

        using EventLoop loop = Backends.CreateLoop(backend);
        using var restarted = ConnectionListener.Listen(loop, endPoint, new EchoHandler());
        Assert.Equal(endPoint, restarted.LocalEndPoint);
    }

    [Fact]
    public void ReusePort_with_a_unix_socket_endpoint_is_refused_with_a_clear_message()
    {
        string path = UnixSocketTests.TempSocketPath();
        using var loop = new EventLoop();
        var error = Assert.Throws<ArgumentException>(() => ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), new EchoHandler(), new ListenerOptions { ReusePort = true }));
        Assert.Contains("ReusePort", error.Message);
        using var group = new EventLoopGroup(2);
        error = Assert.Throws<ArgumentException>(() => group.Listen(new UnixDomainSocketEndPoint(path), new EchoHandler(), mode: GroupAcceptMode.ReusePort));
        Assert.Contains("ReusePort", error.Message);
    }

    private sealed class CloseAfterFirstByteHandler : EchoHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Close();
    }
}
