namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

public class GroupAndListenerTests
{
    /// <summary>At MaxConnections the listener pauses (clients wait in the listen queue) and resumes when one closes.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_listener_pauses_at_MaxConnections_and_resumes_when_one_closes(EventLoopBackend backend)
    {
        var handler = new PauseRecordingHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 3 });
        var clients = Enumerable.Range(0, 3).Select(_ => server.Connect()).ToList();
        foreach (Socket c in clients)
        {
            c.Send(new byte[] { 1 });
            c.ReceiveExactly(1);
        }

        using Socket waiting = server.Connect(receiveTimeoutMs: 10_000);
        waiting.Send(new byte[] { 2 });
        LoopHarness.WaitUntil(() => server.Listener.IsAcceptPaused && !handler.Paused.IsEmpty, "the listener pauses and reports it");
        Assert.Equal(AcceptPauseReason.ConnectionLimit, handler.Paused.Single().Reason);
        Assert.Equal(3, server.Listener.ConnectionCount);
        Thread.Sleep(100);
        Assert.Equal(0, waiting.Available);

        clients[0].Dispose();
        Assert.Equal(2, waiting.ReceiveExactly(1)[0]);
        Assert.True(handler.Resumed.Count >= 1);
        Assert.InRange(server.Listener.ConnectionCount, 1, 3);
        clients.Skip(1).ToList().ForEach(c => c.Dispose());
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_single_acceptor_hands_connections_round_robin_to_the_group(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        var handler = new LoopRecordingHandler();
        using var group = new EventLoopGroup(3, new EventLoopOptions { Backend = backend });
        IReadOnlyList<ConnectionListener> listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler, mode: GroupAcceptMode.SingleAcceptor);
        Assert.Single(listeners);
        EchoAndClose(listeners[0].LocalEndPoint, 30);
        LoopHarness.WaitUntil(() => handler.Loops.Count == 30, "30 connections");
        Assert.All(group.Loops, loop => Assert.Equal(10, handler.Loops.Count(l => l == loop)));
        Assert.True(group.ShutdownAsync(TimeSpan.FromSeconds(5)).Wait(TimeSpan.FromSeconds(10)));
        Assert.True(group.Completion.Wait(TimeSpan.FromSeconds(10)));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void SO_REUSEPORT_listeners_share_one_port_and_the_kernel_spreads_connections(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        Skip.IfNot(OperatingSystem.IsLinux(), "SO_REUSEPORT load balancing is Linux-only");
        var handler = new LoopRecordingHandler();
        using var group = new EventLoopGroup(2, new EventLoopOptions { Backend = backend });
        IReadOnlyList<ConnectionListener> listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler, mode: GroupAcceptMode.ReusePort);
        Assert.Equal(2, listeners.Count);
        Assert.Equal(((IPEndPoint)listeners[0].LocalEndPoint).Port, ((IPEndPoint)listeners[1].LocalEndPoint).Port);
        EchoAndClose(listeners[0].LocalEndPoint, 40);
        LoopHarness.WaitUntil(() => handler.Loops.Count == 40, "40 connections");

        // 40 connections from distinct ports all hashed to one socket: probability 2^-39.
        Assert.All(group.Loops, loop => Assert.Contains(loop, handler.Loops));
        Assert.Equal(40, group.AcceptedCount);
        Assert.True(group.ShutdownAsync(TimeSpan.FromSeconds(5)).Wait(TimeSpan.FromSeconds(10)));
    }

    /// <summary>The group's graceful shutdown drains connections on every loop, then stops the loops.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Group_shutdown_drains_every_loop_then_stops(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        var handler = new EchoHandler();
        using var group = new EventLoopGroup(2, new EventLoopOptions { Backend = backend });
        EndPoint endPoint = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler, mode: GroupAcceptMode.SingleAcceptor)[0].LocalEndPoint;
        var clients = Enumerable.Range(0, 10).Select(_ => EchoServer.ConnectTo(endPoint)).ToList();
        var payloads = clients.Select((c, i) => SocketTestExtensions.Pattern(i, 20_000)).ToList();
        for (int i = 0; i < clients.Count; i++)
        {
            clients[i].Send(payloads[i]);
        }

        LoopHarness.WaitUntil(() => group.ConnectionCount == 10, "10 connections");
        Thread.Sleep(100);
        Task shutdown = group.ShutdownAsync(TimeSpan.FromSeconds(10));
        for (int i = 0; i < clients.Count; i++)
        {
            Assert.Equal(payloads[i], clients[i].ReceiveToEnd());
            clients[i].Dispose();
        }

        await shutdown.WaitAsync(TimeSpan.FromSeconds(15));
        await group.Completion.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.All(group.Loops, l => Assert.True(l.IsDisposed));
        Assert.Equal(10, handler.Closed);
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
    }

    /// <summary>The group names each loop's thread after <see cref="EventLoopOptions.ThreadName"/> and the loop's index.</summary>
    [Fact]
    public void Group_loop_threads_carry_the_options_thread_name_and_their_index()
    {
        using var group = new EventLoopGroup(2, new EventLoopOptions { Backend = EventLoopBackend.Managed, ThreadName = "test group loop" });
        for (int i = 0; i < group.Loops.Count; i++)
        {
            var name = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
            group.Loops[i].Post(() => name.SetResult(Thread.CurrentThread.Name));
            Assert.True(name.Task.Wait(TimeSpan.FromSeconds(10)), "the loop runs the posted work");
            Assert.Equal("test group loop " + i.ToString(System.Globalization.CultureInfo.InvariantCulture), name.Task.Result);
        }

        using var defaults = new EventLoopGroup(1, new EventLoopOptions { Backend = EventLoopBackend.Managed });
        var defaultName = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        defaults.Loops[0].Post(() => defaultName.SetResult(Thread.CurrentThread.Name));
        Assert.True(defaultName.Task.Wait(TimeSpan.FromSeconds(10)), "the loop runs the posted work");
        Assert.Equal("EpollSharp loop 0", defaultName.Task.Result);
    }

    [Theory]
    [InlineData("Max open files            1024                 524288               files     ", 1024)]
    [InlineData("Max open files            unlimited            unlimited            files     ", int.MaxValue)]
    [InlineData("Max open files\t256\t256\tfiles", 256)]
    public void The_soft_descriptor_limit_is_parsed_from_proc_limits(string line, long expected)
    {
        Assert.Equal(expected, DescriptorLimits.ParseMaxOpenFiles(line));
        Assert.Null(DescriptorLimits.ParseMaxOpenFiles("Max processes             63704                63704                processes "));
    }

    [Theory]
    [InlineData(256, 40, 152)]
    [InlineData(1024, 60, 900)]
    [InlineData(20000, 60, 19428)]
    [InlineData(100, 90, 1)]
    public void The_default_connection_limit_keeps_headroom(long softLimit, int open, int expected)
    {
        Assert.Equal(expected, DescriptorLimits.Derive(softLimit, open));
    }

    [Fact]
    public void The_default_connection_limit_is_below_this_process_descriptor_limit()
    {
        int max = ListenerOptions.DefaultMaxConnections;
        long? soft = DescriptorLimits.ReadSoftLimit();
        if (OperatingSystem.IsLinux())
        {
            Assert.NotNull(soft);
            Assert.InRange(max, 1, soft!.Value - 64);
        }
        else
        {
            Assert.Equal(DescriptorLimits.FallbackMaxConnections, max);
        }
    }

    [Fact]
    public void Options_reject_values_that_do_not_fit()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { ReceiveBufferSize = 10 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { TriggerMode = TriggerMode.OneShot });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { IdleTimeout = TimeSpan.Zero });
        Assert.Throws<ArgumentException>(() => new ConnectionOptions { HighWatermark = 100, LowWatermark = 200 }.Validate());
        Assert.Throws<ArgumentException>(() => new ConnectionOptions { HighWatermark = 2_000_000, MaxBufferedBytes = 1_000_000 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new ListenerOptions { MaxConnections = -1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new EventLoopGroup(-1));
    }

    private static void EchoAndClose(EndPoint endPoint, int count)
    {
        for (int i = 0; i < count; i++)
        {
            using Socket client = EchoServer.ConnectTo(endPoint);
            client.Send(new byte[] { (byte)i });
            Assert.Equal((byte)i, client.ReceiveExactly(1)[0]);
        }
    }

    private sealed class LoopRecordingHandler : EchoHandler
    {
        public ConcurrentQueue<EventLoop> Loops { get; } = new();

        public override void OnConnected(Connection connection)
        {
            Assert.True(connection.Loop.IsOnLoopThread);
            Loops.Enqueue(connection.Loop);
            base.OnConnected(connection);
        }
    }

    private sealed class PauseRecordingHandler : EchoHandler
    {
        public ConcurrentQueue<AcceptPauseEpisode> Paused { get; } = new();

        public ConcurrentQueue<AcceptPauseEpisode> Resumed { get; } = new();

        public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode) => Paused.Enqueue(episode);

        public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode) => Resumed.Enqueue(episode);
    }
}
