using System.Diagnostics;
using System.IO;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The edges of dialing out on every backend: the next-address fallback of a <see cref="DnsEndPoint"/>, a connect
/// with no route (<see cref="ConnectFailureReason.Unreachable"/>), and a Unix socket connect that finds the listener's queue
/// full (<c>EAGAIN</c>). Loopback only, every wait bounded. (1,000 concurrent dialed connections with every byte checked are
/// <c>OutboundTests.A_thousand_concurrent_outbound_connections_echo_every_byte</c>.)
/// </summary>
public class OutboundEdgeTests
{
    /// <summary>Writes the pattern of its <see cref="Connection.UserState"/> on connect and checks that the same bytes come back.</summary>
    private sealed class PatternHandler : ConnectionHandler
    {
        private readonly MemoryStream _received = new();

        public ConcurrentQueue<ConnectFailure> Failures { get; } = new();

        public ConcurrentQueue<Connection> Connected { get; } = new();

        public int Verified;

        public int Mismatched;

        public override void OnConnected(Connection connection)
        {
            Connected.Enqueue(connection);
            if (connection.UserState is byte[] pattern)
            {
                connection.Write(pattern);
            }
        }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            _received.Write(data.ToArray(), 0, data.Length);
            if (connection.UserState is byte[] pattern && _received.Length >= pattern.Length)
            {
                if (_received.ToArray().AsSpan().SequenceEqual(pattern))
                {
                    Interlocked.Increment(ref Verified);
                }
                else
                {
                    Interlocked.Increment(ref Mismatched);
                }

                connection.Close();
            }
        }

        public override void OnConnectFailed(ConnectFailure failure) => Failures.Enqueue(failure);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Next-address fallback
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// A name with an IPv6 and an IPv4 loopback address, the first refused (a socket is bound to its port there but does not
    /// listen, so the refusal is certain) and the second listening: the attempt goes on to the second and connects there,
    /// and the bytes go through. The name is resolved by <c>ConnectOptions.Resolver</c> (internal, for tests), which returns
    /// the two addresses in the order given: on this project's build machine "localhost" resolves to 127.0.0.1 alone, so the
    /// system resolver cannot give a fallback (the test below uses it where it can).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndOrders))]
    public async Task A_DnsEndPoint_whose_first_address_refuses_connects_to_the_next(EventLoopBackend backend, bool ipv6First)
    {
        SkipUnlessIpv6();
        using var run = new RunningLoop(backend);
        IPAddress first = ipv6First ? IPAddress.IPv6Loopback : IPAddress.Loopback;
        IPAddress second = ipv6First ? IPAddress.Loopback : IPAddress.IPv6Loopback;
        using Socket listener = PlainListener(second, port: 0);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using Socket refuser = BoundNotListening(first, port);

        int resolutions = 0;
        var options = new ConnectOptions
        {
            Resolver = host =>
            {
                Interlocked.Increment(ref resolutions);
                Assert.Equal("fallback.test", host);
                return Task.FromResult(new[] { first, second });
            },
        };

        var handler = new PatternHandler();
        byte[] pattern = SocketTestExtensions.Pattern(21, 30_000);
        if (ipv6First)
        {
            // The callback form: one OnConnected, no OnConnectFailed for the refused address.
            Connection.Connect(run.Loop, new DnsEndPoint("fallback.test", port), handler, options, userState: pattern);
        }
        else
        {
            Connection dialed = await Connection.ConnectAsync(run.Loop, new DnsEndPoint("fallback.test", port), handler, options).WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(new IPEndPoint(second, port), dialed.RemoteEndPoint);
            run.Harness.Invoke(() =>
            {
                dialed.UserState = pattern;
                dialed.Write(pattern);
            });
        }

        using Socket accepted = AcceptWithin(listener);
        accepted.ReceiveTimeout = 10_000;
        Assert.Equal(second.AddressFamily, accepted.RemoteEndPoint!.AddressFamily);
        byte[] got = accepted.ReceiveExactly(pattern.Length);
        Assert.True(got.AsSpan().SequenceEqual(pattern), "the peer got the pattern");
        accepted.Send(got);
        LoopHarness.WaitUntil(() => handler.Verified == 1, "the dialed side verified the echo");

        Connection connection = Assert.Single(handler.Connected);
        Assert.Equal(new IPEndPoint(second, port), connection.RemoteEndPoint);
        Assert.Empty(handler.Failures);
        Assert.Equal(0, handler.Mismatched);
        Assert.Equal(1, resolutions);
        Assert.Empty(run.Errors);
    }

    /// <summary>Every address refuses: one failure, <see cref="ConnectFailureReason.Refused"/>, naming the last address tried (so all were tried, in order).</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_DnsEndPoint_whose_addresses_all_refuse_fails_with_the_last_one(EventLoopBackend backend)
    {
        SkipUnlessIpv6();
        using var run = new RunningLoop(backend);
        using Socket v4 = BoundNotListening(IPAddress.Loopback, port: 0);
        int port = ((IPEndPoint)v4.LocalEndPoint!).Port;
        using Socket v6 = BoundNotListening(IPAddress.IPv6Loopback, port);
        var options = new ConnectOptions { Resolver = _ => Task.FromResult(new[] { IPAddress.Loopback, IPAddress.IPv6Loopback }) };

        var e = await Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(run.Loop, new DnsEndPoint("refused.test", port), new PatternHandler(), options).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(ConnectFailureReason.Refused, e.Reason);
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, port), e.Failure.LastAddress);
        Assert.Equal(new DnsEndPoint("refused.test", port), e.Failure.EndPoint);

        // The same name with its address family given: only the IPv4 address is tried.
        var v4Only = new DnsEndPoint("refused.test", port, AddressFamily.InterNetwork);
        e = await Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(run.Loop, v4Only, new PatternHandler(), options).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), e.Failure.LastAddress);
        Assert.Equal(0, run.Loop.RegistrationCount);
        Assert.Empty(run.Errors);
    }

    /// <summary>
    /// The same fallback through the system resolver: "localhost" where it resolves to both ::1 and 127.0.0.1 (most machines
    /// with IPv6). Only the last address listens; every earlier one refuses. Skipped where "localhost" has one address.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Localhost_through_the_system_resolver_falls_back_to_its_last_address(EventLoopBackend backend)
    {
        SkipUnlessIpv6();
        IPAddress[] addresses = Dns.GetHostAddresses("localhost");
        Skip.If(
            addresses.Length < 2 || addresses.Select(a => a.AddressFamily).Distinct().Count() < 2,
            "\"localhost\" resolves to " + string.Join(", ", (object[])addresses) + " here, not to both ::1 and 127.0.0.1 (the fallback is tested through ConnectOptions.Resolver above)");

        using var run = new RunningLoop(backend);
        IPAddress last = addresses[^1];
        using Socket listener = PlainListener(last, port: 0);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var refusers = new List<Socket>();
        try
        {
            foreach (IPAddress earlier in addresses.Take(addresses.Length - 1).Where(a => !a.Equals(last)).Distinct())
            {
                refusers.Add(BoundNotListening(earlier, port));
            }

            Connection connection = await Connection.ConnectAsync(run.Loop, new DnsEndPoint("localhost", port), new PatternHandler()).WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(new IPEndPoint(last, port), connection.RemoteEndPoint);
            AcceptWithin(listener).Dispose();
            Assert.Empty(run.Errors);
        }
        finally
        {
            refusers.ForEach(s => s.Dispose());
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Unreachable
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// No route, without a packet leaving the machine: Linux refuses a TCP connect to a multicast address at once with
    /// <c>ENETUNREACH</c> (tcp_v4_connect and tcp_v6_connect check for it before sending anything). <c>EHOSTUNREACH</c>,
    /// <c>ENETDOWN</c> and <c>EHOSTDOWN</c> cannot be provoked on loopback; their mapping is tested directly below.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_connect_with_no_route_fails_with_Unreachable(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "a TCP connect to a multicast address fails with ENETUNREACH on Linux; other systems answer otherwise");
        using var run = new RunningLoop(backend);
        var handler = new PatternHandler();
        var endPoint = new IPEndPoint(IPAddress.Parse("224.0.0.1"), 9);

        var e = await Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(run.Loop, endPoint, handler).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(ConnectFailureReason.Unreachable, e.Reason);
        Assert.Equal(SocketError.NetworkUnreachable, e.SocketErrorCode);
        Assert.Equal(endPoint, e.Failure.LastAddress);

        Connection.Connect(run.Loop, endPoint, handler, userState: "no route");
        LoopHarness.WaitUntil(() => handler.Failures.Count == 1, "the callback form reports the failure");
        ConnectFailure failure = handler.Failures.Single();
        Assert.Equal(ConnectFailureReason.Unreachable, failure.Reason);
        Assert.Equal("no route", failure.UserState);
        Assert.Empty(handler.Connected);

        if (HasIpv6())
        {
            e = await Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(run.Loop, new IPEndPoint(IPAddress.Parse("ff02::1"), 9), handler).WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.Equal(ConnectFailureReason.Unreachable, e.Reason);
        }

        Assert.Equal(0, run.Loop.RegistrationCount);
        Assert.Empty(run.Errors);
    }

    /// <summary>An unreachable first address is not the end: the next address is tried, and connects.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task An_unreachable_address_falls_back_to_the_next(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "a TCP connect to a multicast address fails with ENETUNREACH on Linux");
        using var run = new RunningLoop(backend);
        using Socket listener = RunningLoop.PlainListener(4);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var options = new ConnectOptions { Resolver = _ => Task.FromResult(new[] { IPAddress.Parse("224.0.0.1"), IPAddress.Loopback }) };
        Connection connection = await Connection.ConnectAsync(run.Loop, new DnsEndPoint("unreachable-first.test", port), new PatternHandler(), options).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), connection.RemoteEndPoint);
        AcceptWithin(listener).Dispose();
        Assert.Empty(run.Errors);
    }

    /// <summary>
    /// The mapping from the error a connect ended with to <see cref="ConnectFailureReason"/> (<c>Connector.Classify</c>), tested
    /// directly: the unreachable family beyond <c>ENETUNREACH</c> cannot be provoked without leaving loopback.
    /// </summary>
    [Theory]
    [InlineData(SocketError.NetworkUnreachable, false, ConnectFailureReason.Unreachable)]
    [InlineData(SocketError.HostUnreachable, false, ConnectFailureReason.Unreachable)]
    [InlineData(SocketError.NetworkDown, false, ConnectFailureReason.Unreachable)]
    [InlineData(SocketError.HostDown, false, ConnectFailureReason.Unreachable)]
    [InlineData(SocketError.ConnectionRefused, false, ConnectFailureReason.Refused)]
    [InlineData(SocketError.ConnectionRefused, true, ConnectFailureReason.Refused)]
    [InlineData(SocketError.AddressNotAvailable, true, ConnectFailureReason.Refused)]
    [InlineData(SocketError.AddressNotAvailable, false, ConnectFailureReason.SocketError)]
    [InlineData(SocketError.TimedOut, false, ConnectFailureReason.TimedOut)]
    [InlineData(SocketError.HostNotFound, false, ConnectFailureReason.NameNotFound)]
    [InlineData(SocketError.TryAgain, false, ConnectFailureReason.NameNotFound)]
    [InlineData(SocketError.NoData, false, ConnectFailureReason.NameNotFound)]
    [InlineData(SocketError.ConnectionReset, false, ConnectFailureReason.SocketError)]
    [InlineData(SocketError.AccessDenied, true, ConnectFailureReason.SocketError)]
    public void Each_socket_error_maps_to_its_failure_reason(SocketError error, bool unix, ConnectFailureReason expected)
    {
        EndPoint address = unix ? new UnixDomainSocketEndPoint("/tmp/es-classify.sock") : new IPEndPoint(IPAddress.Loopback, 80);
        Assert.Equal(expected, Connector.Classify(error, address));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // A Unix socket listener whose queue is full (EAGAIN)
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// A non-blocking connect to a Unix listener whose queue is full fails with <c>EAGAIN</c> at once and is not in
    /// progress (unlike TCP). The connector waits on a timer and connects again every 10 ms: no registration meanwhile, the
    /// loop thread idle, and once the listener accepts, the retry connects and the bytes go through.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_unix_connect_to_a_full_queue_is_retried_and_connects_once_there_is_room(EventLoopBackend backend)
    {
        string path = UnixSocketTests.TempSocketPath();
        using var run = new RunningLoop(backend);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(0);
        List<Socket> fillers = FillUnixQueue(path);
        try
        {
            var handler = new PatternHandler();
            byte[] pattern = SocketTestExtensions.Pattern(33, 20_000);
            long cpuBefore = LoopThreadCpuMs(run);
            var watch = Stopwatch.StartNew();
            Connection.Connect(run.Loop, new UnixDomainSocketEndPoint(path), handler, new ConnectOptions { ConnectTimeout = TimeSpan.FromSeconds(20) }, userState: pattern);

            // 300 ms of a full queue: still trying, on a timer (nothing registered), without spinning.
            Thread.Sleep(300);
            run.Harness.Invoke(() => Assert.Equal(0, run.Loop.RegistrationCount));
            long cpuMs = LoopThreadCpuMs(run) - cpuBefore;
            Assert.Empty(handler.Connected);
            Assert.Empty(handler.Failures);
            if (cpuMs >= 0)
            {
                Assert.True(cpuMs < 150, $"the loop thread used {cpuMs} ms of CPU in {watch.ElapsedMilliseconds} ms of retries (a spinning retry uses all of it)");
            }

            // Room in the queue: the fillers are accepted, and the next retry connects.
            var accepted = new List<Socket>();
            try
            {
                for (int i = 0; i < fillers.Count; i++)
                {
                    accepted.Add(AcceptWithin(listener));
                }

                LoopHarness.WaitUntil(() => handler.Connected.Count == 1 || !handler.Failures.IsEmpty, "the retried connect succeeds once the queue has room");
                Assert.Empty(handler.Failures);
                using Socket ours = AcceptWithin(listener);
                ours.ReceiveTimeout = 10_000;
                byte[] got = ours.ReceiveExactly(pattern.Length);
                Assert.True(got.AsSpan().SequenceEqual(pattern), "the peer got the pattern");
                ours.Send(got);
                LoopHarness.WaitUntil(() => handler.Verified == 1, "the dialed side verified the echo");
                Assert.Equal(0, handler.Mismatched);
            }
            finally
            {
                accepted.ForEach(s => s.Dispose());
            }

            Assert.Empty(run.Errors);
        }
        finally
        {
            fillers.ForEach(s => s.Dispose());
            File.Delete(path);
        }
    }

    /// <summary>
    /// A Unix listener whose queue stays full: the retries end at the connect timeout with <see cref="ConnectFailureReason.TimedOut"/>
    /// (and the socket error <see cref="SocketError.TimedOut"/>), as documented, not with a generic error; a cancellation
    /// during the retries ends it with <see cref="ConnectFailureReason.Canceled"/>. Nothing stays registered or scheduled.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_unix_connect_to_a_queue_that_stays_full_times_out_or_is_canceled(EventLoopBackend backend)
    {
        string path = UnixSocketTests.TempSocketPath();
        using var run = new RunningLoop(backend);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(0);
        List<Socket> fillers = FillUnixQueue(path);
        try
        {
            var endPoint = new UnixDomainSocketEndPoint(path);
            long cpuBefore = LoopThreadCpuMs(run);
            var watch = Stopwatch.StartNew();
            var e = await Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(run.Loop, endPoint, new PatternHandler(), new ConnectOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) }).WaitAsync(TimeSpan.FromSeconds(20)));
            watch.Stop();
            long cpuMs = LoopThreadCpuMs(run) - cpuBefore;
            Assert.Equal(ConnectFailureReason.TimedOut, e.Reason);
            Assert.Equal(SocketError.TimedOut, e.SocketErrorCode);
            Assert.Equal(endPoint.ToString(), e.Failure.LastAddress?.ToString());
            Assert.InRange(watch.ElapsedMilliseconds, 250, 5_000);
            if (cpuMs >= 0)
            {
                Assert.True(cpuMs < 150, $"the loop thread used {cpuMs} ms of CPU in {watch.ElapsedMilliseconds} ms of retries (a spinning retry uses all of it)");
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
            var handler = new PatternHandler();
            Connection.Connect(run.Loop, endPoint, handler, new ConnectOptions { ConnectTimeout = TimeSpan.FromSeconds(20) }, cancellationToken: cts.Token);
            LoopHarness.WaitUntil(() => handler.Failures.Count == 1, "the cancellation ends the retries");
            Assert.Equal(ConnectFailureReason.Canceled, handler.Failures.Single().Reason);
            Assert.Empty(handler.Connected);

            // Nothing was queued behind the fillers: the only pending connections are theirs.
            listener.Blocking = false;
            int pending = 0;
            while (TryAccept(listener) is { } s)
            {
                s.Dispose();
                pending++;
            }

            Assert.Equal(fillers.Count, pending);
            Assert.Equal(0, run.Loop.RegistrationCount);
            Assert.Empty(run.Errors);
        }
        finally
        {
            fillers.ForEach(s => s.Dispose());
            File.Delete(path);
        }
    }

    public static IEnumerable<object[]> BackendsAndOrders() =>
        Backends.All().SelectMany(b => new[] { new object[] { b[0], true }, new object[] { b[0], false } });

    /// <summary>Connects plain non-blocking clients to the Unix listener at <paramref name="path"/> until one gets <c>EAGAIN</c>: the queue is full. Returns the connected ones.</summary>
    private static List<Socket> FillUnixQueue(string path)
    {
        var fillers = new List<Socket>();
        for (int i = 0; i < 16; i++)
        {
            var filler = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { Blocking = false };
            try
            {
                filler.Connect(new UnixDomainSocketEndPoint(path));
                fillers.Add(filler);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
            {
                filler.Dispose();
                return fillers;
            }
        }

        fillers.ForEach(s => s.Dispose());
        throw new InvalidOperationException("16 clients connected to a Unix listener with backlog 0 without EAGAIN: its queue never filled");
    }

    /// <summary>Accepts a connection that is pending or comes within 10 s, else fails (a blocking Accept could hang the test).</summary>
    private static Socket AcceptWithin(Socket listener)
    {
        Assert.True(listener.Poll(10_000_000, SelectMode.SelectRead), "a connection to accept within 10 s");
        return listener.Accept();
    }

    private static Socket? TryAccept(Socket listener)
    {
        try
        {
            return listener.Accept();
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
        {
            return null;
        }
    }

    /// <summary>The CPU time the loop thread has used (user + system, from /proc/thread-self/stat read on it), in ms; -1 where that file does not exist.</summary>
    private static long LoopThreadCpuMs(RunningLoop run) => run.Harness.Invoke(() =>
    {
        const string Stat = "/proc/thread-self/stat";
        if (!File.Exists(Stat))
        {
            return -1L;
        }

        // After the command name in parentheses: state is field 3, utime and stime fields 14 and 15, in clock ticks (100 per s).
        string text = File.ReadAllText(Stat);
        string[] fields = text.Substring(text.LastIndexOf(')') + 2).Split(' ');
        return (long.Parse(fields[11]) + long.Parse(fields[12])) * 10;
    });

    private static Socket PlainListener(IPAddress address, int port)
    {
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(address, port));
        listener.Listen(4);
        return listener;
    }

    /// <summary>A socket bound to the address and port and not listening: a connect there is refused, and nobody else can listen there meanwhile.</summary>
    private static Socket BoundNotListening(IPAddress address, int port)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(address, port));
        return socket;
    }

    private static bool HasIpv6()
    {
        try
        {
            using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static void SkipUnlessIpv6() => Skip.IfNot(HasIpv6(), "IPv6 is unavailable here (binding ::1 failed)");
}
