using System.Diagnostics;
using System.Text;
using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The limits that protect a server, beyond what Connections.* already checks (the default connection limit under the
/// descriptor limit, a listener pausing at MaxConnections, one silent connection closed by the idle timeout, one handler
/// stopped by MaxBufferedBytes): a group sharing one limit, a crowd of slowloris clients, and many clients that never read.
/// </summary>
[Collection(ProcessWide.Name)]
public class LimitTests
{
    private readonly ITestOutputHelper _output;

    public LimitTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// The default limit of a listener: below the process's descriptor limit by the headroom the runtime needs
    /// (RLIMIT_NOFILE - open now - max(64, min(512, limit/32))), as ListenerOptions documents.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_default_connection_limit_leaves_headroom_below_the_descriptor_limit(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "reads /proc/self/limits");
        using var server = new EchoServer(backend, new EchoHandler());
        long soft = DescriptorLimits.ReadSoftLimit()!.Value;
        long headroom = DescriptorLimits.Headroom(soft);
        int open = Fds.CountOpen();
        _output.WriteLine($"soft RLIMIT_NOFILE {soft}, {open} descriptors open, headroom {headroom}: default MaxConnections {server.Listener.MaxConnections}");
        Assert.InRange(server.Listener.MaxConnections, soft - open - headroom - 16, soft - headroom - 1);
    }

    /// <summary>
    /// A group of two loops with SO_REUSEPORT listeners and MaxConnections 6 shares the 6 between its listeners: 24 clients
    /// arrive at once, the server never holds more than 6, and every client is served as others leave.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_group_shares_one_connection_limit_among_its_listeners(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "SO_REUSEPORT");
        Backends.SkipUnlessAvailable(backend);
        var handler = new ConcurrencyTracker();
        var errors = new ConcurrentQueue<Exception>();
        using var group = new EventLoopGroup(2, new EventLoopOptions { Backend = backend, UnhandledExceptionHandler = errors.Enqueue });
        IReadOnlyList<ConnectionListener> listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler, new ListenerOptions { MaxConnections = 6 }, GroupAcceptMode.ReusePort);
        Assert.Equal(2, listeners.Count);
        Assert.All(listeners, l => Assert.Equal(6, l.MaxConnections));
        EndPoint endPoint = listeners[0].LocalEndPoint;
        OwnThreads.Run(24, i =>
        {
            using Socket client = EchoServer.ConnectTo(endPoint, receiveTimeoutMs: 30_000);
            client.Send(new[] { (byte)i });
            Assert.Equal((byte)i, client.ReceiveExactly(1)[0]);
            Thread.Sleep(50); // hold the connection a little, so that others must wait
        });
        LoopHarness.WaitUntil(() => group.ConnectionCount == 0, "all closed");
        _output.WriteLine($"24 clients, limit 6 shared by 2 listeners: at most {handler.MaxConcurrent} at once; accepted per listener: {string.Join(", ", listeners.Select(l => l.AcceptedCount))}");
        Assert.Equal(24, handler.Total);
        Assert.InRange(handler.MaxConcurrent, 1, 6);
        Assert.Empty(errors);
    }

    /// <summary>
    /// 100 slowloris clients: each opens a connection, sends the start of an HTTP request, then one more byte every 1.5 s,
    /// slower than the idle timeout (600 ms), or nothing at all. Each is closed by the server (IdleTimeout) within a few
    /// hundred milliseconds of falling silent, while 4 busy echo clients are served throughout and never closed; nothing
    /// leaks. (A client that trickles faster than the idle timeout: see the next test.)
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Slowloris_clients_are_closed_by_the_idle_timeout_while_others_are_served(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        await Slowloris(backend, 100);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (double[] closedAfter, long roundTrips) = await Slowloris(backend, 100);
        _output.WriteLine($"100 slowloris clients closed {closedAfter.Min():F0} to {closedAfter.Max():F0} ms after their last byte (idle timeout 600 ms); {roundTrips:N0} echo round trips meanwhile");
        Assert.All(closedAfter, ms => Assert.InRange(ms, 500, 3000));
        Resources.AssertBackTo(baseline, _output, "slowloris");
    }

    private static async Task<(double[] ClosedAfterMs, long RoundTrips)> Slowloris(EventLoopBackend backend, int count)
    {
        var handler = new EchoHandler();
        var options = new ListenerOptions { Connection = { IdleTimeout = TimeSpan.FromMilliseconds(600) } };
        using var server = new EchoServer(backend, handler, options);
        var traffic = new EchoTraffic(server.EndPoint, clients: 4, seed: 500);
        byte[] start = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: example\r\nX-a: ");
        double[] closedAfter = await Task.WhenAll(Enumerable.Range(0, count).Select(i => Task.Run(async () =>
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(server.EndPoint);
            var last = Stopwatch.StartNew();
            if (i % 2 == 0)
            {
                await client.SendAsync(start, SocketFlags.None);
                last.Restart();
            }

            // Read the echo of what was sent, then wait for the server to close; send a byte every 1.5 s meanwhile.
            var buffer = new byte[256];
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(20))
            {
                using var tick = new CancellationTokenSource(TimeSpan.FromMilliseconds(1500));
                try
                {
                    int n = await client.ReceiveAsync(buffer, SocketFlags.None, tick.Token);
                    if (n == 0)
                    {
                        return last.Elapsed.TotalMilliseconds;
                    }
                }
                catch (OperationCanceledException)
                {
                    // On a busy machine the cancellation can win against an end of stream that had already arrived:
                    // readable with nothing to read is that end (or a reset), so the close came before this tick.
                    if (client.Poll(0, SelectMode.SelectRead) && client.Available == 0)
                    {
                        return last.Elapsed.TotalMilliseconds;
                    }

                    await client.SendAsync(new[] { (byte)'a' }, SocketFlags.None);
                    last.Restart();
                }
                catch (SocketException)
                {
                    return last.Elapsed.TotalMilliseconds;
                }
            }

            throw new TimeoutException("a slowloris client was not closed within 20 s");
        })));
        LoopHarness.WaitUntil(() => handler.Closed >= count, "every slowloris connection is closed");
        traffic.AssertProgress(10);
        await traffic.StopAsync();
        LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "every connection closes");
        Assert.Equal(count, handler.Closes.Count(c => c.Reason == ConnectionCloseReason.IdleTimeout));
        server.AssertNoLoopErrors();
        return (closedAfter, traffic.RoundTrips);
    }

    /// <summary>
    /// A client that trickles one byte every 200 ms, faster than the 600 ms idle timeout, is never idle: the transport keeps
    /// it (documented: request deadlines belong to the protocol). A handler enforces one with a loop timer and Abort, as
    /// docs/reliability.md shows: the trickler is cut off at the deadline (1 s), and a client that sends its whole request
    /// in time is served.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_client_that_trickles_faster_than_the_idle_timeout_is_closed_by_a_request_deadline(EventLoopBackend backend)
    {
        var handler = new RequestDeadlineHandler(TimeSpan.FromSeconds(1));
        var options = new ListenerOptions { Connection = { IdleTimeout = TimeSpan.FromMilliseconds(600) } };
        using var server = new EchoServer(backend, handler, options);
        using Socket trickler = server.Connect();
        using Socket prompt = server.Connect();
        prompt.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\n\r\n"));
        Assert.Equal("OK\n", Encoding.ASCII.GetString(prompt.ReceiveExactly(3)));
        var sw = Stopwatch.StartNew();
        SocketError end = SocketError.Success;
        while (sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(200);
            trickler.Send(new[] { (byte)'a' }, 0, 1, SocketFlags.None, out end);
            if (end != SocketError.Success)
            {
                break;
            }
        }

        _output.WriteLine($"the trickler was cut off after {sw.ElapsedMilliseconds} ms ({end})");
        Assert.NotEqual(SocketError.Success, end);
        LoopHarness.WaitUntil(() => handler.Closes.Any(c => c.Reason == ConnectionCloseReason.Aborted), "the trickler's connection is aborted");
        Assert.Single(handler.Closes, c => c.Reason == ConnectionCloseReason.Aborted);
        Assert.All(handler.Closes, c => Assert.Contains(c.Reason, new[] { ConnectionCloseReason.Aborted, ConnectionCloseReason.IdleTimeout })); // the prompt client, idle since its answer
        Assert.InRange(sw.ElapsedMilliseconds, 900, 5000);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// 50 clients send without ever reading. With the default echo handler (backpressure pauses receiving), each connection's
    /// backlog stays under HighWatermark + one read (64 + 16 KiB) and the server's heap grows by less than 50 times that;
    /// with a handler that ignores backpressure and amplifies (64 KiB out per byte in), MaxBufferedBytes (256 KiB here) resets
    /// each connection (OutputLimitExceeded) before its backlog passes the limit. The idle timeout then closes the stalled
    /// echo connections (reset: their output is stuck), and the heap is back to its baseline.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Clients_that_never_read_cannot_grow_the_server_memory_without_bound(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        await NeverReaders(backend, 50, amplify: false);
        await NeverReaders(backend, 50, amplify: true);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (long maxBacklog, long heapGrowth, string reasons) = await NeverReaders(backend, 50, amplify: false);
        _output.WriteLine($"echo, 50 clients that never read: largest backlog {maxBacklog:N0} bytes; server heap grew by {heapGrowth / 1024:N0} KiB while they were stalled; closed: {reasons}");
        Assert.InRange(maxBacklog, 1, (64 + 16) * 1024);
        Assert.InRange(heapGrowth, long.MinValue, 50L * (64 + 16) * 1024 + (4 * 1024 * 1024));
        (maxBacklog, heapGrowth, reasons) = await NeverReaders(backend, 50, amplify: true);
        _output.WriteLine($"amplifier, 50 clients that never read: largest backlog {maxBacklog:N0} bytes (limit {256 * 1024:N0}); closed: {reasons}");
        Assert.InRange(maxBacklog, 1, 256 * 1024);
        Resources.AssertBackTo(baseline, _output, "clients that never read", heapSlackBytes: 4 * 1024 * 1024);
    }

    private static async Task<(long MaxBacklog, long HeapGrowth, string Reasons)> NeverReaders(EventLoopBackend backend, int count, bool amplify)
    {
        ConnectionHandler handler = amplify ? new Amplifier() : new EchoHandler();
        var options = new ListenerOptions
        {
            Connection = { IdleTimeout = TimeSpan.FromSeconds(1), MaxBufferedBytes = 256 * 1024 },
        };
        using var server = new EchoServer(backend, handler, options);
        long heapBefore = Resources.CollectAndMeasureHeap();
        var clients = new List<Socket>();
        var senders = new List<Thread>();
        for (int i = 0; i < count; i++)
        {
            Socket client = ConnectWithSmallReceiveBuffer(server.EndPoint);
            clients.Add(client);
            var sender = new Thread(() =>
            {
                var chunk = new byte[16 * 1024];
                try
                {
                    for (int k = 0; k < 4096; k++)
                    {
                        client.Send(chunk); // blocks once the server stops reading; fails once it closes
                    }
                }
                catch (SocketException)
                {
                }
                catch (ObjectDisposedException)
                {
                }
            })
            { IsBackground = true };
            sender.Start();
            senders.Add(sender);
        }

        long maxBacklog = 0;
        long heapGrowth = 0;
        if (!amplify)
        {
            var echo = (EchoHandler)handler;
            LoopHarness.WaitUntil(() => echo.Connected == count && echo.WritePausedCount == count, "every connection stalls under backpressure", 20);
            Thread.Sleep(200);
            maxBacklog = echo.MaxBuffered;
            heapGrowth = Resources.CollectAndMeasureHeap() - heapBefore;
        }

        var closes = (ConcurrentQueue<(ConnectionCloseReason Reason, SocketError Error)>)(amplify ? ((Amplifier)handler).Closes : ((EchoHandler)handler).Closes);
        LoopHarness.WaitUntil(() => closes.Count == count, "every connection is closed (idle timeout or output limit)", 20);
        if (amplify)
        {
            maxBacklog = ((Amplifier)handler).MaxBuffered;
            Assert.All(closes, c => Assert.Equal(ConnectionCloseReason.OutputLimitExceeded, c.Reason));
        }
        else
        {
            Assert.All(closes, c => Assert.Equal(ConnectionCloseReason.IdleTimeout, c.Reason));
        }

        clients.ForEach(c => c.Dispose());
        Assert.All(senders, t => Assert.True(t.Join(TimeSpan.FromSeconds(20)), "a sender did not stop"));
        await Task.CompletedTask;
        server.AssertNoLoopErrors();
        return (maxBacklog, heapGrowth, string.Join(", ", closes.GroupBy(c => c.Reason).Select(g => $"{g.Key} x{g.Count()}")));
    }

    /// <summary>
    /// A client whose receive buffer is small (64 KiB, locked: autotuning does not grow it to megabytes) and set before it
    /// connects. Shrunk to 16 KiB after the handshake, the buffer was smaller than the window the client had advertised:
    /// the server's bytes in that window were dropped, and with both directions at a zero window the client most likely
    /// ignored the server's window updates until the server's retransmission timeout, backed off past the 1 s idle
    /// timeout. The client stopped sending, and its connection ended idle instead of stalling under backpressure or at
    /// the output limit (on any backend). Set first (and not so small that loopback's segments overrun it), the
    /// advertised window fits the buffer.
    /// </summary>
    private static Socket ConnectWithSmallReceiveBuffer(IPEndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)
        {
            NoDelay = true,
            ReceiveBufferSize = 64 * 1024,
            ReceiveTimeout = 10_000,
            SendTimeout = 10_000,
        };
        socket.Connect(endPoint);
        return socket;
    }

    /// <summary>Writes 64 KiB for every read, ignoring backpressure.</summary>
    private sealed class Amplifier : ConnectionHandler
    {
        private static readonly byte[] Block = new byte[64 * 1024];
        private long _maxBuffered;

        public ConcurrentQueue<(ConnectionCloseReason Reason, SocketError Error)> Closes { get; } = new();

        public long MaxBuffered => Interlocked.Read(ref _maxBuffered);

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.Write(Block) && connection.BufferedBytes > MaxBuffered)
            {
                Interlocked.Exchange(ref _maxBuffered, connection.BufferedBytes);
            }
        }

        public override void OnWritePaused(Connection connection)
        {
            // Ignores backpressure on purpose.
        }

        public override void OnClosed(Connection connection) => Closes.Enqueue((connection.CloseReason, connection.SocketError));
    }

    /// <summary>
    /// Tracks how many connections are open at once; echoes. A connection counts from its OnConnected until it is closed
    /// (IsClosed turns true before its slot in the limit is given back; OnClosed comes later, at the end of the callback).
    /// </summary>
    private sealed class ConcurrencyTracker : EchoHandler
    {
        private readonly ConcurrentDictionary<Connection, bool> _live = new();
        private int _max;
        private int _total;

        public int MaxConcurrent => Volatile.Read(ref _max);

        public int Total => Volatile.Read(ref _total);

        public override void OnConnected(Connection connection)
        {
            _live[connection] = true;
            Interlocked.Increment(ref _total);
            int open = _live.Keys.Count(c => !c.IsClosed);
            int max;
            while (open > (max = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, open, max) != max)
            {
            }
        }

        public override void OnClosed(Connection connection)
        {
            _live.TryRemove(connection, out _);
            base.OnClosed(connection);
        }
    }

    /// <summary>
    /// A request deadline in the handler: a request must be complete (end with an empty line) within the deadline of the
    /// connection's start, or the connection is aborted. The recipe for slow clients that the idle timeout cannot catch.
    /// </summary>
    private sealed class RequestDeadlineHandler : ConnectionHandler
    {
        private readonly TimeSpan _deadline;

        public RequestDeadlineHandler(TimeSpan deadline) => _deadline = deadline;

        public ConcurrentQueue<(ConnectionCloseReason Reason, SocketError Error)> Closes { get; } = new();

        public override void OnConnected(Connection connection)
        {
            var request = new RequestState();
            connection.UserState = request;
            request.Deadline = connection.Loop.Schedule(_deadline, static timer => ((Connection)timer.State!).Abort(), connection);
        }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            var request = (RequestState)connection.UserState!;
            request.Text.Append(Encoding.ASCII.GetString(data));
            if (request.Text.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                request.Deadline!.Cancel();
                connection.Write("OK\n"u8);
                request.Text.Clear();
            }
        }

        public override void OnClosed(Connection connection)
        {
            ((RequestState)connection.UserState!).Deadline!.Cancel();
            Closes.Enqueue((connection.CloseReason, connection.SocketError));
        }

        private sealed class RequestState
        {
            public StringBuilder Text { get; } = new();

            public LoopTimer? Deadline { get; set; }
        }
    }
}
