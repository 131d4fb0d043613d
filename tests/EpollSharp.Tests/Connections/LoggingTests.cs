using Microsoft.Extensions.Logging;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// What the loop and the connection layer log through <see cref="EventLoopOptions.LoggerFactory"/>: the events of
/// docs/articles/operating.md, with their ids, levels and values; nothing, and no allocation, when the level is off.
/// </summary>
public class LoggingTests
{
    private static EventLoop CreateLoop(EventLoopBackend backend, ListLoggerFactory logs, ConcurrentQueue<Exception>? errors = null, TimeSpan? budget = null)
    {
        Backends.SkipUnlessAvailable(backend);
        return new EventLoop(new EventLoopOptions
        {
            Backend = backend,
            LoggerFactory = logs,
            UnhandledExceptionHandler = errors is null ? null : errors.Enqueue,
            CallbackBudget = budget ?? Timeout.InfiniteTimeSpan,
        });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_listener_logs_its_start_shutdown_and_stop(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), new ListenerOptions { MaxConnections = 77 });
        ListLoggerFactory.Entry started = Assert.Single(logs.WithId(100));
        Assert.Equal(("EpollSharp.Connections", LogLevel.Information, "ListenerStarted"), (started.Category, started.Level, started.Id.Name));
        Assert.Equal(listener.LocalEndPoint, started["EndPoint"]);
        Assert.Equal(77, started["MaxConnections"]);
        Assert.Equal("EchoHandler", started["Handler"]);
        Assert.Contains("Listening on " + listener.LocalEndPoint, started.Message, StringComparison.Ordinal);

        using (Socket client = EchoServer.ConnectTo(listener.LocalEndPoint))
        {
            client.Send(new byte[] { 1 });
            Assert.Equal(new byte[] { 1 }, client.ReceiveExactly(1));
        }

        Assert.True(listener.ShutdownAsync(TimeSpan.FromSeconds(5)).Wait(20_000));
        ListLoggerFactory.Entry shutdown = Assert.Single(logs.WithId(107));
        Assert.Equal(TimeSpan.FromSeconds(5), shutdown["DrainTimeout"]);
        // The stop runs on the loop thread, posted by ShutdownAsync; with no connection to drain the task may complete first.
        LoopHarness.WaitUntil(() => logs.WithId(101).Any(), "the stop was logged");
        ListLoggerFactory.Entry stopped = Assert.Single(logs.WithId(101));
        Assert.Equal(1L, stopped["Accepted"]);
        Assert.Empty(logs.WithId(108));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Accept_pauses_at_the_connection_limit_are_logged_with_the_reason_and_the_resume(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), new ListenerOptions { MaxConnections = 1 });
        Socket first = EchoServer.ConnectTo(listener.LocalEndPoint);
        first.Send(new byte[] { 1 });
        Assert.Equal(new byte[] { 1 }, first.ReceiveExactly(1));
        using Socket second = EchoServer.ConnectTo(listener.LocalEndPoint);
        LoopHarness.WaitUntil(() => logs.WithId(102).Any(), "the pause was logged");
        ListLoggerFactory.Entry paused = logs.WithId(102).Single();
        Assert.Equal((LogLevel.Warning, AcceptPauseReason.ConnectionLimit), (paused.Level, paused["Reason"]));
        first.Dispose();
        second.Send(new byte[] { 2 });
        Assert.Equal(new byte[] { 2 }, second.ReceiveExactly(1));
        ListLoggerFactory.Entry resumed = Assert.Single(logs.WithId(103));
        Assert.Equal((LogLevel.Information, AcceptPauseReason.ConnectionLimit), (resumed.Level, resumed["Reason"]));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_connection_reset_by_its_peer_is_logged_at_debug_and_a_completed_one_is_not(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        var handler = new EchoHandler();
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
        using (Socket polite = EchoServer.ConnectTo(listener.LocalEndPoint))
        {
            polite.Shutdown(SocketShutdown.Send);
            Assert.Empty(polite.ReceiveToEnd());
        }

        LoopHarness.WaitUntil(() => handler.Closed == 1, "the polite connection closed");
        using (Socket rude = EchoServer.ConnectTo(listener.LocalEndPoint))
        {
            rude.Send(new byte[] { 1 });
            Assert.Equal(new byte[] { 1 }, rude.ReceiveExactly(1));
            rude.LingerState = new LingerOption(true, 0);
        }

        LoopHarness.WaitUntil(() => handler.Closed == 2, "the reset connection closed");
        ListLoggerFactory.Entry failed = Assert.Single(logs.WithId(104));
        Assert.Equal((LogLevel.Debug, ConnectionCloseReason.Reset), (failed.Level, failed["Reason"]));
        Assert.Equal(handler.Connections.Last().Id, failed["ConnectionId"]);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_callback_exception_and_a_slow_callback_are_logged_by_the_loop(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CreateLoop(backend, logs, errors, budget: TimeSpan.FromMilliseconds(20));
        using var harness = new LoopHarness(loop);
        loop.Post(() => throw new InvalidOperationException("boom"));
        loop.Post(() => Thread.Sleep(150));
        LoopHarness.WaitUntil(() => logs.WithId(3).Any(), "the slow callback's end was logged");
        ListLoggerFactory.Entry thrown = Assert.Single(logs.WithId(1));
        Assert.Equal(("EpollSharp.EventLoop", LogLevel.Error, "boom"), (thrown.Category, thrown.Level, thrown.Exception!.Message));
        Assert.Single(errors);
        ListLoggerFactory.Entry ended = logs.WithId(3).Single();
        Assert.Equal((LogLevel.Warning, LoopCallbackKind.PostedWork), (ended.Level, ended["Kind"]));
        Assert.True((long)ended["ElapsedMs"]! >= 20);
        Assert.Contains(nameof(A_callback_exception_and_a_slow_callback_are_logged_by_the_loop), (string)ended["Method"]!, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_refused_dial_is_logged_at_debug(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        using var unused = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        unused.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var e = Assert.ThrowsAsync<ConnectException>(() => Connection.ConnectAsync(loop, unused.LocalEndPoint!, new EchoHandler())).GetAwaiter().GetResult();
        ListLoggerFactory.Entry failed = Assert.Single(logs.WithId(106));
        Assert.Equal((LogLevel.Debug, ConnectFailureReason.Refused), (failed.Level, failed["Reason"]));
        Assert.Equal(e.Reason, failed["Reason"]);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_drain_that_times_out_is_logged_with_the_connections_reset(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory();
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new StubbornHandler());
        using Socket client = EchoServer.ConnectTo(listener.LocalEndPoint);
        LoopHarness.WaitUntil(() => listener.ConnectionCount == 1, "the connection is open");
        Assert.True(listener.ShutdownAsync(TimeSpan.FromMilliseconds(100)).Wait(20_000));
        ListLoggerFactory.Entry timedOut = Assert.Single(logs.WithId(108));
        Assert.Equal((LogLevel.Warning, 1), (timedOut.Level, timedOut["Reset"]));
        Assert.Equal(ConnectionCloseReason.ShutdownTimeout, Assert.Single(logs.WithId(104))["Reason"]);
    }

    private sealed class StubbornHandler : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
        }

        // Ignores the shutdown request: stays open until the drain deadline resets it.
        public override void OnShutdownRequested(Connection connection)
        {
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void With_debug_off_a_steady_echo_logs_nothing_and_allocates_nothing(EventLoopBackend backend)
    {
        var logs = new ListLoggerFactory(LogLevel.Information);
        using EventLoop loop = CreateLoop(backend, logs);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler());
        using Socket client = EchoServer.ConnectTo(listener.LocalEndPoint);
        byte[] message = SocketTestExtensions.Pattern(3, 64);
        void RoundTrips(int count)
        {
            for (int i = 0; i < count; i++)
            {
                client.Send(message);
                Assert.Equal(message, client.ReceiveExactly(message.Length));
            }
        }

        RoundTrips(2_000);
        int before = logs.Entries.Count;
        long allocatedBefore = harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
        RoundTrips(10_000);
        long allocated = harness.Invoke(GC.GetAllocatedBytesForCurrentThread) - allocatedBefore;
        Assert.True(allocated < 1024, $"{allocated} bytes allocated on the loop thread for 10,000 messages with a logger attached");
        Assert.Equal(before, logs.Entries.Count);
        Assert.All(logs.Entries, e => Assert.True(e.Level >= LogLevel.Information));
    }

    [Fact]
    public void Without_a_logger_factory_nothing_is_logged_and_nothing_fails()
    {
        using var server = new EchoServer(EventLoopBackend.Epoll, new EchoHandler());
        using Socket client = server.Connect();
        client.Send(new byte[] { 9 });
        Assert.Equal(new byte[] { 9 }, client.ReceiveExactly(1));
        server.AssertNoLoopErrors();
    }
}
