using System.Collections.Concurrent;
using System.IO;
using EpollSharp.Connections;
using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests;

/// <summary>
/// Listeners on io_uring's completion path accept with one multishot accept instead of a readiness registration: many
/// connects, a listener disposed while clients connect (the port is free afterwards), pausing at the connection limit and
/// resuming, IPv6 (dual mode) and Unix domain sockets. Real sockets on loopback.
/// </summary>
public class IoUringAcceptTests
{
    private readonly ITestOutputHelper _output;

    public IoUringAcceptTests(ITestOutputHelper output) => _output = output;

    /// <summary>An io_uring loop with the completion path on, or the test is skipped with the reason.</summary>
    private static EventLoop CompletionLoop(ConcurrentQueue<Exception> errors)
    {
#if EPOLLSHARP_NETSTANDARD2_0
        // That build cannot wrap an accepted descriptor in a Socket: its listeners accept through readiness, and its
        // connections still use completions (covered by IoUringCompletionTests).
        Skip.If(true, "the netstandard2.0 build's listeners accept through readiness");
#endif
        EpollSharp.Tests.Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring, UnhandledExceptionHandler = errors.Enqueue, IoUringCompletions = true });
        if (loop.CompletionIo is null)
        {
            loop.Dispose();
            Skip.If(true, "io_uring completions unavailable on this kernel");
        }

        return loop;
    }

    [SkippableFact]
    public void Many_connects_are_accepted_with_a_multishot_accept_and_echoed()
    {
        const int Clients = 200;
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        using var harness = new LoopHarness(loop);
        var handler = new EchoHandler();
        // A limit far above what the test opens: the listener keeps one multishot accept armed throughout.
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler, new ListenerOptions { MaxConnections = 100_000 });
        Assert.True(listener.AcceptsWithCompletions);
        var endPoint = (IPEndPoint)listener.LocalEndPoint;

        // Connects in parallel bursts, so that several wait in the backlog at once.
        var sockets = new ConcurrentBag<Socket>();
        Parallel.For(0, Clients, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ => sockets.Add(EchoServer.ConnectTo(endPoint)));
        LoopHarness.WaitUntil(() => handler.Connected == Clients, "every client is accepted");
        byte[] message = SocketTestExtensions.Pattern(11, 100);
        foreach (Socket s in sockets)
        {
            s.Send(message);
        }

        foreach (Socket s in sockets)
        {
            Assert.Equal(message, s.ReceiveExactly(message.Length));
        }

        (int registrations, long accepts, bool completions, bool multishot, int ends) = harness.Invoke(() => (loop.RegistrationCount, listener.CompletionAccepts, handler.Connections.All(c => c.UsesCompletions), listener.AcceptMultishotArmed, listener.AcceptEnds));
        _output.WriteLine($"registrations {registrations}, accept completions {accepts}, accepted {listener.AcceptedCount}, multishot armed {multishot}, accepts ended {ends}");
        Assert.Equal(0, registrations);
        Assert.True(multishot, "a multishot accept is armed");
        Assert.Equal(0, ends);
        Assert.Equal(Clients, accepts);
        Assert.Equal(Clients, listener.AcceptedCount);
        Assert.True(completions, "every connection uses completions");
        foreach (Socket s in sockets)
        {
            s.Dispose();
        }

        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        Assert.Empty(errors);
    }

    [SkippableFact]
    public void A_listener_disposed_while_clients_connect_releases_its_port()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        using var harness = new LoopHarness(loop);
        for (int round = 0; round < 5; round++)
        {
            var handler = new EchoHandler();
            var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
            var endPoint = (IPEndPoint)listener.LocalEndPoint;
            using var stop = new CancellationTokenSource();
            int connected = 0;
            Task clients = Task.Run(() =>
            {
                while (!stop.IsCancellationRequested)
                {
                    try
                    {
                        using Socket s = EchoServer.ConnectTo(endPoint, 1000);
                        Interlocked.Increment(ref connected);
                    }
                    catch (SocketException)
                    {
                        // Refused once the listener is gone.
                    }
                }
            });
            LoopHarness.WaitUntil(() => Volatile.Read(ref connected) > 20, "clients connect");

            // Disposed on the loop thread: when Dispose returns, the accept is cancelled and the socket closed.
            harness.Invoke(() => listener.Dispose());

            // Bind the same port with a plain socket (SO_REUSEADDR as the listener had, so that TIME_WAIT does not count):
            // a listening socket still held by the kernel would make it fail with AddressAlreadyInUse.
            using (var again = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                again.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                again.Bind(endPoint);
                again.Listen(16);
            }

            stop.Cancel();
            clients.Wait(TimeSpan.FromSeconds(10));
            _output.WriteLine($"round {round}: {connected} connects, {listener.AcceptedCount} accepted before the dispose");
        }

        Assert.Empty(errors);
    }

    [SkippableFact]
    public void At_the_connection_limit_the_accept_pauses_and_resumes_when_a_connection_closes()
    {
        const int Limit = 4;
        const int Clients = 10;
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        using var harness = new LoopHarness(loop);
        var handler = new PauseRecordingHandler();
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler, new ListenerOptions { MaxConnections = Limit });
        Assert.True(listener.AcceptsWithCompletions);
        var endPoint = (IPEndPoint)listener.LocalEndPoint;
        var clients = Enumerable.Range(0, Clients).Select(_ => EchoServer.ConnectTo(endPoint)).ToList();
        LoopHarness.WaitUntil(() => handler.Connected == Limit, "the first connections are admitted");
        LoopHarness.WaitUntil(() => listener.IsAcceptPaused, "the listener pauses at the limit");
        harness.Settle();
        Assert.Equal(Limit, listener.ConnectionCount);
        Assert.Equal(AcceptPauseReason.ConnectionLimit, Assert.Single(handler.Paused));

        // Every client still gets served, Limit at a time: each one echoes, then closes and makes room for the next.
        byte[] message = SocketTestExtensions.Pattern(3, 50);
        for (int i = 0; i < Clients; i++)
        {
            LoopHarness.WaitUntil(() => handler.Connected > i, $"client {i} is admitted");
            Assert.InRange(listener.ConnectionCount, 0, Limit);
            clients[i].Send(message);
            Assert.Equal(message, clients[i].ReceiveExactly(message.Length));
            clients[i].Dispose();
        }

        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        LoopHarness.WaitUntil(() => !listener.IsAcceptPaused, "accepting resumed");
        Assert.Equal(Clients, listener.AcceptedCount);
        Assert.Equal(handler.Paused.Count, handler.Resumed);
        Assert.True(handler.MaxOpen <= Limit, $"at most {Limit} connections were open at once ({handler.MaxOpen})");

        // And the listener goes on accepting afterwards.
        using Socket late = EchoServer.ConnectTo(endPoint);
        late.Send(message);
        Assert.Equal(message, late.ReceiveExactly(message.Length));
        Assert.Empty(errors);
    }

    [SkippableFact]
    public void Near_the_limit_the_multishot_accept_gives_way_to_single_accepts_and_the_limit_holds()
    {
        // Multishot while more than Backlog + MaxAcceptsPerEvent = 20 connections fit: for the first 10 of 30.
        const int Limit = 30;
        const int Clients = 45;
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        using var harness = new LoopHarness(loop);
        var handler = new PauseRecordingHandler();
        var options = new ListenerOptions { MaxConnections = Limit, Backlog = 16, MaxAcceptsPerEvent = 4 };
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler, options);
        var endPoint = (IPEndPoint)listener.LocalEndPoint;
        LoopHarness.WaitUntil(() => harness.Invoke(() => listener.AcceptMultishotArmed), "the multishot accept is armed");

        // One by one up to the limit (the multishot accept ends at the 10th, single accepts follow), then a burst that
        // finds the limit reached.
        var clients = new ConcurrentBag<Socket>();
        for (int i = 0; i < Limit; i++)
        {
            clients.Add(EchoServer.ConnectTo(endPoint));
            LoopHarness.WaitUntil(() => handler.Connected == i + 1, $"client {i} is admitted");
        }

        Parallel.For(Limit, Clients, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ => clients.Add(EchoServer.ConnectTo(endPoint)));
        LoopHarness.WaitUntil(() => listener.IsAcceptPaused, "the listener pauses at the limit");
        harness.Settle();
        (bool multishot, int ends) = harness.Invoke(() => (listener.AcceptMultishotArmed, listener.AcceptEnds));
        _output.WriteLine($"open {listener.ConnectionCount}, most open {handler.MaxOpen}, multishot armed {multishot}, accepts ended {ends}");
        Assert.Equal(Limit, listener.ConnectionCount);
        Assert.True(handler.MaxOpen <= Limit, $"at most {Limit} open at once ({handler.MaxOpen})");
        Assert.False(multishot, "no multishot accept is armed at the limit");
        Assert.True(ends >= Limit - 10, $"the multishot accept ended, and single accepts followed ({ends} ended)");

        // Everyone is served once room comes.
        foreach (Socket s in clients)
        {
            s.Dispose();
        }

        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every client was admitted and closed", 20);
        Assert.Equal(Clients, listener.AcceptedCount);
        Assert.True(handler.MaxOpen <= Limit, $"at most {Limit} open at once ({handler.MaxOpen})");
        // With room again, the next accept (a single one, armed when room came) is followed by a multishot one.
        using Socket late = EchoServer.ConnectTo(endPoint);
        LoopHarness.WaitUntil(() => handler.Connected == Clients + 1, "a late client is admitted");
        LoopHarness.WaitUntil(() => harness.Invoke(() => listener.AcceptMultishotArmed), "the multishot accept is armed again");
        Assert.Empty(errors);
    }

    [SkippableFact]
    public void A_dual_mode_IPv6_listener_accepts_IPv4_and_IPv6_clients_with_completions()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        try
        {
            using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        }
        catch (SocketException e)
        {
            Skip.If(true, "IPv6 is unavailable here: " + e.SocketErrorCode);
        }

        using var harness = new LoopHarness(loop);
        var handler = new EchoHandler();
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), handler);
        Assert.True(listener.AcceptsWithCompletions);
        int port = ((IPEndPoint)listener.LocalEndPoint).Port;
        foreach (IPEndPoint endPoint in new[] { new IPEndPoint(IPAddress.Loopback, port), new IPEndPoint(IPAddress.IPv6Loopback, port) })
        {
            using var client = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5_000 };
            client.Connect(endPoint);
            byte[] data = SocketTestExtensions.Pattern(port, 1000);
            client.Send(data);
            Assert.Equal(data, client.ReceiveExactly(data.Length));
        }

        var remotes = harness.Invoke(() => handler.Connections.Select(c => c.RemoteEndPoint).ToList());
        Assert.Equal(2, remotes.Count);
        Assert.All(remotes, r => Assert.Equal(AddressFamily.InterNetworkV6, r!.AddressFamily));
        Assert.Equal(2, harness.Invoke(() => listener.CompletionAccepts));
        Assert.Empty(errors);
    }

    [SkippableFact]
    public void A_unix_domain_listener_accepts_with_completions_and_frees_its_path()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        using var harness = new LoopHarness(loop);
        string path = UnixSocketTests.TempSocketPath();
        var handler = new EchoHandler();
        var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), handler);
        try
        {
            Assert.True(listener.AcceptsWithCompletions);
            for (int i = 0; i < 20; i++)
            {
                using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 };
                client.Connect(new UnixDomainSocketEndPoint(path));
                byte[] data = SocketTestExtensions.Pattern(i, 500);
                client.Send(data);
                Assert.Equal(data, client.ReceiveExactly(data.Length));
            }

            Assert.Equal(20, harness.Invoke(() => listener.CompletionAccepts));
        }
        finally
        {
            harness.Invoke(() => listener.Dispose());
        }

        Assert.False(File.Exists(path), "the socket file is removed when the listener stops");

        // The path can be listened on again at once.
        using var again = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), new EchoHandler());
        using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 })
        {
            client.Connect(new UnixDomainSocketEndPoint(path));
            client.Send(new byte[] { 42 });
            Assert.Equal(new byte[] { 42 }, client.ReceiveExactly(1));
        }

        Assert.Empty(errors);
    }

    [SkippableFact]
    public void A_listener_made_on_the_loop_thread_or_before_the_loop_runs_accepts_with_completions()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);

        // Before the loop runs: the accept is armed when it starts.
        var early = new EchoHandler();
        using var before = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), early);
        using Socket waiting = EchoServer.ConnectTo(before.LocalEndPoint);
        using var harness = new LoopHarness(loop);

        // On the loop thread: armed at once.
        var late = new EchoHandler();
        using ConnectionListener onLoop = harness.Invoke(() => ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), late));
        using Socket client = EchoServer.ConnectTo(onLoop.LocalEndPoint);
        foreach (Socket s in new[] { waiting, client })
        {
            s.Send(new byte[] { 1, 2, 3 });
            Assert.Equal(new byte[] { 1, 2, 3 }, s.ReceiveExactly(3));
        }

        Assert.True(before.AcceptsWithCompletions && onLoop.AcceptsWithCompletions);
        Assert.Equal((1L, 1L), harness.Invoke(() => (before.CompletionAccepts, onLoop.CompletionAccepts)));
        Assert.Empty(errors);
    }

    [SkippableFact]
    public void A_listener_keeps_accepting_when_its_loop_runs_again_on_another_thread()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CompletionLoop(errors);
        var handler = new EchoHandler();
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
        for (int run = 0; run < 3; run++)
        {
            // Each run on a new thread (a ring bound to its thread is moved; the accept is armed again there).
            Task running = loop.Start("run " + run);
            using (Socket client = EchoServer.ConnectTo(listener.LocalEndPoint))
            {
                client.Send(new byte[] { (byte)run });
                Assert.Equal(new[] { (byte)run }, client.ReceiveExactly(1));
            }

            loop.Stop();
            Assert.True(running.Wait(TimeSpan.FromSeconds(10)), "the run ends");
        }

        Assert.Equal(3, listener.AcceptedCount);
        Assert.Empty(errors);
    }

    /// <summary>Echoes, and records the pause episodes and the most connections open at once.</summary>
    private sealed class PauseRecordingHandler : EchoHandler
    {
        private int _open;
        private int _maxOpen;
        private int _resumed;

        public ConcurrentQueue<AcceptPauseReason> Paused { get; } = new();

        public int Resumed => Volatile.Read(ref _resumed);

        public int MaxOpen => Volatile.Read(ref _maxOpen);

        public override void OnConnected(Connection connection)
        {
            int open = Interlocked.Increment(ref _open);
            int max;
            while (open > (max = Volatile.Read(ref _maxOpen)) && Interlocked.CompareExchange(ref _maxOpen, open, max) != max)
            {
            }

            base.OnConnected(connection);
        }

        public override void OnClosed(Connection connection)
        {
            Interlocked.Decrement(ref _open);
            base.OnClosed(connection);
        }

        public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode) => Paused.Enqueue(episode.Reason);

        public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode) => Interlocked.Increment(ref _resumed);
    }
}
