using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Faults from peers: a reset in the middle of a write, half-closes while the server still writes, a refused connect,
/// clients that give up before they are accepted. For each: the other connections keep being served (background echo
/// clients compare every byte), the user is told (OnClosed with a reason, a readiness with Error or Closed), and the
/// process is back to its descriptors, GC handles and heap afterwards. Each scenario runs once as a warm-up before the
/// baseline is taken, so that what the runtime creates once (its socket engine, pooled buffers, the statics of types
/// used for the first time, thread-pool threads) is in the baseline; then it runs again and is measured.
/// </summary>
[Collection(ProcessWide.Name)]
public class PeerFaultTests
{
    private const int ProducedBytes = 8 * 1024 * 1024;

    private readonly ITestOutputHelper _output;

    public PeerFaultTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// 40 clients ask for 8 MiB each, read a random part of it (0 to 1 MiB, checked), and reset the connection while the server
    /// is still writing (its backlog and the socket buffers are full). Each of those connections ends with Reset or BrokenPipe;
    /// 8 echo clients are served throughout.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_peer_reset_in_the_middle_of_a_write_ends_only_that_connection(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        await ResetsMidWrite(backend, resets: 40, echoClients: 8);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (ConnectionCloseReason[] reasons, long roundTrips) = await ResetsMidWrite(backend, resets: 40, echoClients: 8);
        _output.WriteLine($"40 resets mid-write; close reasons: {string.Join(", ", reasons.GroupBy(r => r).Select(g => $"{g.Key} x{g.Count()}"))}; {roundTrips} echo round trips meanwhile");
        Assert.Equal(40, reasons.Length);
        Assert.All(reasons, r => Assert.Contains(r, new[] { ConnectionCloseReason.Reset, ConnectionCloseReason.BrokenPipe }));
        Resources.AssertBackTo(baseline, _output, "resets mid-write", heapSlackBytes: 4 * 1024 * 1024);
    }

    private static async Task<(ConnectionCloseReason[] Reasons, long RoundTrips)> ResetsMidWrite(EventLoopBackend backend, int resets, int echoClients)
    {
        var handler = new ProducerHandler();
        using var server = new EchoServer(backend, handler);
        var traffic = new EchoTraffic(server.EndPoint, echoClients, seed: 100);
        var rng = new Random(7);
        int[] reads = Enumerable.Range(0, resets).Select(_ => rng.Next(0, 1024 * 1024)).ToArray();
        OwnThreads.Run(resets, i =>
        {
            Thread.Sleep(i * 10);
            using Socket client = server.Connect();
            client.Send(new[] { (byte)'P' });
            byte[] got = client.ReceiveExactly(reads[i]);
            Assert.True(got.AsSpan().SequenceEqual(ProducerHandler.Pattern.AsSpan(0, reads[i])), "the produced stream differs");
            client.LingerState = new LingerOption(true, 0);
        });
        LoopHarness.WaitUntil(() => handler.ProducerCloses.Count == resets, $"{resets} producer connections close", 20);
        traffic.AssertProgress(echoClients * 5);
        await traffic.StopAsync();
        LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "every connection closes");
        server.AssertNoLoopErrors();
        return (handler.ProducerCloses.ToArray(), traffic.RoundTrips);
    }

    /// <summary>
    /// 30 clients each send up to 512 KiB, half-close at once, and only then read, slowly: the server's backlog is full when
    /// their end of stream arrives. Each gets every byte back, then end of stream, and each connection completes.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Peers_that_half_close_while_the_server_still_writes_get_every_byte(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        await HalfCloses(backend, clients: 30);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (ConnectionCloseReason[] reasons, long bytes) = await HalfCloses(backend, clients: 30);
        _output.WriteLine($"30 half-closing clients, {bytes:N0} bytes echoed after their end of stream arrived");
        Assert.Equal(30, reasons.Length);
        Assert.All(reasons, r => Assert.Equal(ConnectionCloseReason.Completed, r));
        Resources.AssertBackTo(baseline, _output, "half-closes", heapSlackBytes: 4 * 1024 * 1024);
    }

    private static async Task<(ConnectionCloseReason[] Reasons, long Bytes)> HalfCloses(EventLoopBackend backend, int clients)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        long total = 0;
        await Task.WhenAll(Enumerable.Range(0, clients).Select(i => Task.Run(async () =>
        {
            byte[] data = SocketTestExtensions.Pattern(1000 + i, 1 + ((i * 104_729) % (512 * 1024)));
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await client.ConnectAsync(server.EndPoint);
            Task send = Task.Run(async () =>
            {
                await client.SendAllAsync(data);
                client.Shutdown(SocketShutdown.Send);
            });

            // Read late and slowly, in small pieces.
            await Task.Delay(100);
            var echoed = new System.IO.MemoryStream();
            var buffer = new byte[8192];
            while (true)
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                int n = await client.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    break;
                }

                echoed.Write(buffer, 0, n);
                if (echoed.Length % 65536 < 8192)
                {
                    await Task.Delay(1);
                }
            }

            await send;
            Assert.True(data.AsSpan().SequenceEqual(echoed.ToArray()), $"client {i}: the echo differs ({echoed.Length} of {data.Length} bytes)");
            Interlocked.Add(ref total, data.Length);
        })));
        LoopHarness.WaitUntil(() => handler.Closed == clients, "every connection closes");
        server.AssertNoLoopErrors();
        return (handler.Closes.Select(c => c.Reason).ToArray(), total);
    }

    /// <summary>
    /// Non-blocking connects to a closed port, registered with the loop: with Writable interest the registration is told
    /// Error or Closed, and the error is ConnectionRefused: on kqueue it comes with the event
    /// (<see cref="Registration.ReportedSocketError"/>; over libkqueue SO_ERROR is consumed by then), on epoll and the
    /// managed backend SO_ERROR says it. With empty interest it is told Closed once, without spinning. An established pair
    /// on the same loop is served meanwhile, and nothing is left open afterwards.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_refused_connect_is_reported_to_its_registration_and_the_loop_goes_on(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        RefusedConnects(backend, 20);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (string[] outcomes, int quietCalls) = RefusedConnects(backend, 20);
        _output.WriteLine("writable interest: " + string.Join(", ", outcomes.GroupBy(o => o).Select(g => $"{g.Key} x{g.Count()}")));
        _output.WriteLine($"empty interest: {quietCalls} callbacks for 20 refused connects");
        Assert.Equal(20, outcomes.Length);
        Assert.All(outcomes, o => Assert.Contains("ConnectionRefused", o, StringComparison.Ordinal));
        string source = backend == EventLoopBackend.Kqueue ? "with the event" : "from SO_ERROR";
        Assert.All(outcomes, o => Assert.True(o.StartsWith("at once", StringComparison.Ordinal) || o.EndsWith(source, StringComparison.Ordinal), o));
        Assert.InRange(quietCalls, 20, 60);
        Resources.AssertBackTo(baseline, _output, "refused connects");
    }

    private static (string[] Outcomes, int QuietCalls) RefusedConnects(EventLoopBackend backend, int count)
    {
        EndPoint closedPort;
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            closedPort = probe.LocalEndPoint!;
        }

        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var pair = SocketPair.Create();
        int echoes = 0;
        Registration served = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (_, _) =>
        {
            if (pair.Drain() > 0)
            {
                Interlocked.Increment(ref echoes);
            }
        }));
        var outcomes = new ConcurrentQueue<string>();
        var sockets = new List<Socket>();
        int quietCalls = 0;
        var quiet = new List<Registration>();
        for (int i = 0; i < count * 2; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
            sockets.Add(socket);
            string immediate = "";
            try
            {
                socket.Connect(closedPort);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
            }
            catch (SocketException e)
            {
                immediate = "at once: " + e.SocketErrorCode;
            }

            if (i % 2 == 0)
            {
                h.Invoke(() => h.Loop.Register(socket, Interest.Writable, (r, readiness) =>
                {
                    SocketError reported = r.ReportedSocketError;
                    var pending = (SocketError)(int)r.Socket!.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
                    string error = reported != SocketError.Success ? $"{reported} with the event" : $"{pending} from SO_ERROR";
                    outcomes.Enqueue(immediate.Length > 0 ? immediate : $"{readiness & (Readiness.Error | Readiness.Closed)} {error}");
                    r.Dispose();
                }));
            }
            else
            {
                quiet.Add(h.Invoke(() => h.Loop.Register(socket, Interest.None, (_, _) => Interlocked.Increment(ref quietCalls))));
            }

            pair.Peer.Send(new byte[] { 1 });
        }

        LoopHarness.WaitUntil(() => outcomes.Count == count, $"{count} refused connects reported");
        h.Settle(iterations: 5, sleepMs: 200);
        int settled = Volatile.Read(ref quietCalls);
        h.Settle(iterations: 5, sleepMs: 200);
        Assert.Equal(settled, Volatile.Read(ref quietCalls));
        LoopHarness.WaitUntil(() => Volatile.Read(ref echoes) >= 1, "the established pair is served");
        h.Invoke(() =>
        {
            served.Dispose();
            quiet.ForEach(r => r.Dispose());
        });
        sockets.ForEach(s => s.Dispose());
        return (outcomes.ToArray(), settled);
    }

    /// <summary>
    /// The listener is at its limit (MaxConnections 2) while 50 clients wait in its queue; they give up (reset) before being
    /// accepted. When room comes, the listener accepts what is left of them without an error episode; the connections it
    /// got end as Reset (or as Completed, if the kernel delivered them as closed); a new client is then served.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Clients_that_give_up_before_they_are_accepted_do_not_disturb_the_listener(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        GiveUps(backend, 50);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (long accepted, string reasons, string episodes) = GiveUps(backend, 50);
        _output.WriteLine($"50 clients reset while queued: the listener accepted {accepted} of them; closes: {reasons}; pause episodes: {episodes}");
        Resources.AssertBackTo(baseline, _output, "clients that gave up");
    }

    private static (long Accepted, string Reasons, string Episodes) GiveUps(EventLoopBackend backend, int count)
    {
        var handler = new RecordingEcho();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 2 });
        using Socket first = server.Connect();
        using Socket second = server.Connect();
        first.Send(new byte[] { 1 });
        Assert.Equal(1, first.ReceiveExactly(1)[0]);
        second.Send(new byte[] { 2 });
        Assert.Equal(2, second.ReceiveExactly(1)[0]);
        var quitters = Enumerable.Range(0, count).Select(_ => server.Connect()).ToList();
        foreach (Socket q in quitters)
        {
            q.Send(new byte[] { 3 });
        }

        LoopHarness.WaitUntil(() => server.Listener.IsAcceptPaused, "the listener pauses at its limit");
        foreach (Socket q in quitters)
        {
            q.LingerState = new LingerOption(true, 0);
            q.Dispose();
        }

        second.Dispose();
        LoopHarness.WaitUntil(() => server.Listener.AcceptedCount >= 3 && server.Listener.ConnectionCount <= 1, "the queued connections are taken and end");
        using (Socket late = server.Connect())
        {
            late.Send(new byte[] { 4 });
            Assert.Equal(4, late.ReceiveExactly(1)[0]);
        }

        first.Send(new byte[] { 5 });
        Assert.Equal(5, first.ReceiveExactly(1)[0]);
        Assert.All(handler.Episodes, e => Assert.Equal(AcceptPauseReason.ConnectionLimit, e.Reason));
        Assert.All(handler.Closes, c => Assert.Contains(c.Reason, new[] { ConnectionCloseReason.Reset, ConnectionCloseReason.Completed }));
        server.AssertNoLoopErrors();
        string reasons = string.Join(", ", handler.Closes.GroupBy(c => c.Reason).Select(g => $"{g.Key} x{g.Count()}"));
        return (server.Listener.AcceptedCount - 3, reasons, string.Join(", ", handler.Episodes.Select(e => e.Reason)));
    }

    /// <summary>Writes <see cref="ProducedBytes"/> of a fixed pattern when it receives 'P', respecting backpressure; echoes otherwise.</summary>
    private sealed class ProducerHandler : EchoHandler
    {
        public static readonly byte[] Pattern = SocketTestExtensions.Pattern(5, ProducedBytes);

        public ConcurrentQueue<ConnectionCloseReason> ProducerCloses { get; } = new();

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.UserState is null && data.Length == 1 && data[0] == (byte)'P')
            {
                connection.UserState = new int[1];
                Produce(connection);
                return;
            }

            base.OnReceived(connection, data);
        }

        public override void OnWritePaused(Connection connection)
        {
            if (connection.UserState is null)
            {
                base.OnWritePaused(connection);
            }
        }

        public override void OnWriteResumed(Connection connection)
        {
            if (connection.UserState is null)
            {
                base.OnWriteResumed(connection);
            }
            else
            {
                Produce(connection);
            }
        }

        public override void OnClosed(Connection connection)
        {
            if (connection.UserState is not null)
            {
                ProducerCloses.Enqueue(connection.CloseReason);
            }

            base.OnClosed(connection);
        }

        private static void Produce(Connection connection)
        {
            var offset = (int[])connection.UserState!;
            while (!connection.IsWritePaused && !connection.IsClosed && offset[0] < ProducedBytes)
            {
                int n = Math.Min(32 * 1024, ProducedBytes - offset[0]);
                if (!connection.Write(Pattern.AsSpan(offset[0], n)))
                {
                    return;
                }

                offset[0] += n;
            }
        }
    }

    private sealed class RecordingEcho : EchoHandler
    {
        public ConcurrentQueue<AcceptPauseEpisode> Episodes { get; } = new();

        public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode) => Episodes.Enqueue(episode);
    }
}
