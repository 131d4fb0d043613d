using System.Diagnostics;
using System.IO;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Outbound connections (Connection.Connect / ConnectAsync) on every backend, against real sockets.</summary>
public class OutboundTests
{
    /// <summary>Sends one pattern on connect, collects what comes back, and records how the attempt or connection ended.</summary>
    private sealed class DialHandler : ConnectionHandler
    {
        public ConcurrentQueue<ConnectFailure> Failures { get; } = new();

        public ConcurrentDictionary<long, byte[]> Expected { get; } = new();

        public ConcurrentDictionary<long, MemoryStream> Received { get; } = new();

        public ConcurrentQueue<Connection> Closed { get; } = new();

        public int Verified;

        public int Mismatched;

        public bool ConnectedOnLoopThread = true;

        public override void OnConnected(Connection connection)
        {
            ConnectedOnLoopThread &= connection.Loop.IsOnLoopThread;
            Assert.Null(connection.Listener);
            if (connection.UserState is byte[] pattern)
            {
                Expected[connection.Id] = pattern;
                Received[connection.Id] = new MemoryStream();
                connection.Write(pattern);
            }
        }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            MemoryStream stream = Received[connection.Id];
            stream.Write(data.ToArray(), 0, data.Length);
            byte[] expected = Expected[connection.Id];
            if (stream.Length == expected.Length)
            {
                if (stream.ToArray().AsSpan().SequenceEqual(expected))
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

        public override void OnClosed(Connection connection) => Closed.Enqueue(connection);
    }

    private static int ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private static async Task<ConnectException> FailsAsync(Task<Connection> task)
    {
        var e = await Assert.ThrowsAsync<ConnectException>(() => task.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(e.Failure.SocketError, e.SocketErrorCode);
        return e;
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task ConnectAsync_to_a_listener_of_this_library_echoes_every_byte(EventLoopBackend backend)
    {
        using var server = new EchoServer(backend, new EchoHandler());
        var handler = new DialHandler();
        byte[] pattern = SocketTestExtensions.Pattern(7, 200_000);
        Connection connection = await Connection.ConnectAsync(server.Loop, server.EndPoint, handler).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.False(server.Loop.IsOnLoopThread);
        Assert.Null(connection.Listener);
        Assert.Equal(server.EndPoint, connection.RemoteEndPoint);
        handler.Expected[connection.Id] = pattern;
        handler.Received[connection.Id] = new MemoryStream();
        server.Loop.Post(() => connection.Write(pattern));
        LoopHarness.WaitUntil(() => handler.Verified == 1 && handler.Closed.Count == 1, "the echo is verified and the connection closed");
        Assert.Equal(0, handler.Mismatched);
        Assert.Equal(ConnectionCloseReason.Completed, connection.CloseReason);
        Assert.True(handler.ConnectedOnLoopThread);
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Connect_callback_form_reaches_a_plain_socket_listener(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        using Socket listener = RunningLoop.PlainListener(16);
        var handler = new DialHandler();
        byte[] pattern = SocketTestExtensions.Pattern(11, 50_000);
        Connection.Connect(loop, listener.LocalEndPoint!, handler, userState: pattern);
        using Socket accepted = listener.Accept();
        accepted.ReceiveTimeout = 10_000;
        byte[] got = accepted.ReceiveExactly(pattern.Length);
        Assert.True(got.AsSpan().SequenceEqual(pattern));
        accepted.Send(got);
        LoopHarness.WaitUntil(() => handler.Verified == 1, "the dialed side verified the echo");
        accepted.Shutdown(SocketShutdown.Send);
        Assert.Empty(accepted.ReceiveToEnd());
        LoopHarness.WaitUntil(() => handler.Closed.Count == 1, "the connection closed");
        Assert.Empty(handler.Failures);
        Assert.Empty(errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_closed_port_is_refused_with_the_socket_error(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        var endPoint = new IPEndPoint(IPAddress.Loopback, ClosedPort());
        var handler = new DialHandler();

        ConnectException e = await FailsAsync(Connection.ConnectAsync(loop, endPoint, handler));
        Assert.Equal(ConnectFailureReason.Refused, e.Reason);
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
        Assert.Equal(endPoint, e.Failure.LastAddress);

        Connection.Connect(loop, endPoint, handler, userState: "mine");
        LoopHarness.WaitUntil(() => handler.Failures.Count == 1, "the callback form reports the failure");
        ConnectFailure failure = handler.Failures.Single();
        Assert.Equal(ConnectFailureReason.Refused, failure.Reason);
        Assert.Equal(SocketError.ConnectionRefused, failure.SocketError);
        Assert.Equal("mine", failure.UserState);
        Assert.Equal(0, loop.RegistrationCount);
        Assert.Empty(errors);
    }

    /// <summary>
    /// A connect that never completes, on loopback: a listener with backlog 0 whose accept queue is already full (one
    /// client queued and never accepted). Linux then drops the SYNs of further clients (a full accept queue drops
    /// them whatever tcp_syncookies says), so the connect stays in SYN-SENT, retransmitting, until our timeout ends it.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_connect_to_a_full_accept_queue_times_out(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        using Socket listener = RunningLoop.PlainListener(0);
        var fillers = new List<Socket>();
        try
        {
            for (int i = 0; i < 2; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
                fillers.Add(filler);
                try
                {
                    filler.Connect(listener.LocalEndPoint!);
                }
                catch (SocketException)
                {
                }
            }

            Thread.Sleep(100);
            var options = new ConnectOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) };
            var stopwatch = Stopwatch.StartNew();
            ConnectException e = await FailsAsync(Connection.ConnectAsync(loop, listener.LocalEndPoint!, new DialHandler(), options));
            stopwatch.Stop();
            Assert.Equal(ConnectFailureReason.TimedOut, e.Reason);
            Assert.Equal(SocketError.TimedOut, e.SocketErrorCode);
            Assert.InRange(stopwatch.ElapsedMilliseconds, 250, 5_000);
            Assert.Equal(0, loop.RegistrationCount);
            Assert.Empty(errors);
        }
        finally
        {
            fillers.ForEach(f => f.Dispose());
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Cancellation_before_and_during_the_connect(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        using Socket listener = RunningLoop.PlainListener(0);
        using var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        filler.Connect(listener.LocalEndPoint!);
        var handler = new DialHandler();

        // Before: the task is canceled at once, no socket is made.
        using var canceled = new CancellationTokenSource();
        canceled.Cancel();
        Task<Connection> before = Connection.ConnectAsync(loop, listener.LocalEndPoint!, handler, cancellationToken: canceled.Token);
        Assert.True(before.IsCanceled);

        // During: the connect hangs on the full accept queue; the cancel ends it.
        using var cts = new CancellationTokenSource();
        Task<Connection> during = Connection.ConnectAsync(loop, listener.LocalEndPoint!, handler, cancellationToken: cts.Token);
        LoopHarness.WaitUntil(() => loop.RegistrationCount == 1, "the connect is in progress");
        cts.CancelAfter(50);
        var oce = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => during.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(cts.Token, oce.CancellationToken);
        Assert.True(during.IsCanceled);

        // The callback form reports Canceled.
        using var cts2 = new CancellationTokenSource();
        Connection.Connect(loop, listener.LocalEndPoint!, handler, cancellationToken: cts2.Token);
        LoopHarness.WaitUntil(() => loop.RegistrationCount == 1, "the connect is in progress");
        cts2.Cancel();
        LoopHarness.WaitUntil(() => handler.Failures.Count == 1, "the failure is reported");
        Assert.Equal(ConnectFailureReason.Canceled, handler.Failures.Single().Reason);
        Assert.Equal(SocketError.OperationAborted, handler.Failures.Single().SocketError);
        LoopHarness.WaitUntil(() => loop.RegistrationCount == 0, "nothing is left registered");
        Assert.Empty(errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_DnsEndPoint_is_resolved_off_the_loop_and_connects(EventLoopBackend backend)
    {
        using var server = new EchoServer(backend, new EchoHandler());
        var handler = new DialHandler();
        var endPoint = new DnsEndPoint("localhost", server.EndPoint.Port);
        Connection connection = await Connection.ConnectAsync(server.Loop, endPoint, handler).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(IPAddress.Loopback, ((IPEndPoint)connection.RemoteEndPoint!).Address);
        byte[] pattern = SocketTestExtensions.Pattern(3, 1000);
        handler.Expected[connection.Id] = pattern;
        handler.Received[connection.Id] = new MemoryStream();
        server.Loop.Post(() => connection.Write(pattern));
        LoopHarness.WaitUntil(() => handler.Verified == 1, "the echo is verified");
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_name_that_does_not_resolve_fails_with_NameNotFound(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        var stopwatch = Stopwatch.StartNew();
        ConnectException e = await FailsAsync(Connection.ConnectAsync(loop, new DnsEndPoint("nonexistent.invalid", 80), new DialHandler()));
        Assert.Equal(ConnectFailureReason.NameNotFound, e.Reason);
        Assert.Null(e.Failure.LastAddress);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), "the resolver fails fast for .invalid");
        Assert.Empty(errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_unix_socket_path_connects_and_a_missing_one_is_refused(EventLoopBackend backend)
    {
        string path = UnixSocketTests.TempSocketPath();
        using var server = new EchoServer(backend, new EchoHandler());
        try
        {
            using var listener = ConnectionListener.Listen(server.Loop, new UnixDomainSocketEndPoint(path), new EchoHandler());
            var handler = new DialHandler();
            byte[] pattern = SocketTestExtensions.Pattern(5, 100_000);
            Connection.Connect(server.Loop, new UnixDomainSocketEndPoint(path), handler, userState: pattern);
            LoopHarness.WaitUntil(() => handler.Verified == 1 && handler.Closed.Count == 1, "the unix echo is verified");

            ConnectException e = await FailsAsync(Connection.ConnectAsync(server.Loop, new UnixDomainSocketEndPoint(path + ".missing"), handler));
            Assert.Equal(ConnectFailureReason.Refused, e.Reason);
            server.AssertNoLoopErrors();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_thousand_concurrent_outbound_connections_echo_every_byte(EventLoopBackend backend)
    {
        const int Count = 1000;
        using var server = new EchoServer(backend, new EchoHandler(), new ListenerOptions { Backlog = 2048 });
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        var handler = new DialHandler();
        for (int i = 0; i < Count; i++)
        {
            Connection.Connect(loop, server.EndPoint, handler, userState: SocketTestExtensions.Pattern(i, 1000 + (i * 37 % 4000)));
        }

        LoopHarness.WaitUntil(() => handler.Closed.Count + handler.Failures.Count == Count, "every connection verified and closed", 60);
        Assert.Empty(handler.Failures);
        Assert.Equal(Count, handler.Verified);
        Assert.Equal(0, handler.Mismatched);
        Assert.All(handler.Closed, c => Assert.Equal(ConnectionCloseReason.Completed, c.CloseReason));
        Assert.Empty(errors);
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Disposing_the_loop_ends_an_attempt_and_a_dialed_connection(EventLoopBackend backend)
    {
        using var server = new EchoServer(backend, new EchoHandler());
        using var full = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        full.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        full.Listen(0);
        using var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        filler.Connect(full.LocalEndPoint!);

        EventLoop loop = Backends.CreateLoop(backend);
        var harness = new LoopHarness(loop);
        var handler = new DialHandler();
        Connection connection = await Connection.ConnectAsync(loop, server.EndPoint, handler).WaitAsync(TimeSpan.FromSeconds(20));
        Task<Connection> pending = Connection.ConnectAsync(loop, full.LocalEndPoint!, handler);
        // The dialed connection has a registration of its own unless it uses io_uring's completions.
        int registrations = connection.UsesCompletions ? 1 : 2;
        LoopHarness.WaitUntil(() => loop.RegistrationCount == registrations, "the second connect is in progress");
        harness.Dispose();
        loop.Dispose();
        ConnectException e = await FailsAsync(pending);
        Assert.Equal(ConnectFailureReason.LoopDisposed, e.Reason);
        Assert.True(connection.IsClosed);
        Assert.Equal(ConnectionCloseReason.LoopDisposed, connection.CloseReason);
        Assert.Throws<ObjectDisposedException>(() => Connection.Connect(loop, server.EndPoint, handler));
    }

    [Fact]
    public void Bad_arguments_are_refused_with_the_argument_named()
    {
        using var loop = new EventLoop();
        var handler = new DialHandler();
        Assert.Equal("loop", Assert.Throws<ArgumentNullException>(() => Connection.Connect(null!, new IPEndPoint(IPAddress.Loopback, 1), handler)).ParamName);
        Assert.Equal("endPoint", Assert.Throws<ArgumentNullException>(() => Connection.Connect(loop, null!, handler)).ParamName);
        Assert.Equal("handler", Assert.Throws<ArgumentNullException>(() => Connection.Connect(loop, new IPEndPoint(IPAddress.Loopback, 1), null!)).ParamName);
        Assert.Equal("endPoint", Assert.Throws<ArgumentException>(() => Connection.Connect(loop, new IPEndPoint(IPAddress.Loopback, 0), handler)).ParamName);
        Assert.Equal("endPoint", Assert.Throws<ArgumentException>(() => Connection.Connect(loop, new IPEndPoint(IPAddress.Any, 80), handler)).ParamName);
        Assert.Equal("endPoint", Assert.Throws<ArgumentException>(() => Connection.Connect(loop, new DnsEndPoint("localhost", 0), handler)).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectOptions { ConnectTimeout = TimeSpan.Zero });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectOptions { ConnectTimeout = TimeSpan.FromSeconds(-2) });
        Assert.Throws<ArgumentNullException>(() => new ConnectOptions { Connection = null! });
        Assert.Equal(TimeSpan.FromSeconds(10), new ConnectOptions().ConnectTimeout);
    }
}
