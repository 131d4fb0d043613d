using System.Diagnostics;
using System.IO;
using EpollSharp.Backends;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// The managed backend's own behaviour, with real loopback sockets, through the public <see cref="EventLoop"/> API
/// with <see cref="EventLoopBackend.Managed"/> (it runs on every platform, so nothing here is skipped).
/// </summary>
public sealed partial class ManagedBackendTests
{
    private static readonly byte[] OneByte = { 42 };

    private static LoopHarness StartLoop(int maxEvents = 256) =>
        new(Util.Backends.CreateLoop(EventLoopBackend.Managed, maxEvents));

    [Fact]
    public void Managed_is_available_everywhere()
    {
        Assert.True(BackendFactory.IsAvailable(EventLoopBackend.Managed, out string reason), reason);
        using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Managed });
        Assert.Equal(EventLoopBackend.Managed, loop.Backend);
    }

    [Fact]
    public void Readable_is_delivered_when_the_peer_sends()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            pair.Drain();
        });

        h.Settle();
        Assert.Equal(0, seen.Count);
        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "a readable callback");
        Assert.True((seen.First & Readiness.Readable) != 0, seen.ToString());
        Assert.True((seen.First & (Readiness.Writable | Readiness.Closed | Readiness.Error)) == 0, seen.ToString());
    }

    [Fact]
    public void Writable_is_delivered_for_a_connected_socket()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Writable, (r, rd) =>
        {
            seen.Add(rd);
            r.ChangeInterest(Interest.None);
        });

        LoopHarness.WaitUntil(() => seen.Count >= 1, "a writable callback");
        Assert.Equal(Readiness.Writable, seen.First);
    }

    [Fact]
    public void Level_mode_redelivers_until_drained()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => seen.Add(rd));

        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 5, "five callbacks for one undrained byte");
        h.Invoke(() => pair.Drain());
        h.Settle();
        int after = seen.Count;
        h.Settle();
        Assert.Equal(after, seen.Count);
    }

    [Fact]
    public void Edge_mode_is_not_redelivered_until_new_data_arrives()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => seen.Add(rd), mode: TriggerMode.Edge);

        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "the first edge");
        h.Settle();
        Thread.Sleep(200);
        h.Settle();
        Assert.Equal(1, seen.Count);

        // New data while the old is still unread: the receive queue grew, which is a new edge.
        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 2, "the edge of new data");
        h.Settle();
        Thread.Sleep(100);
        Assert.Equal(2, seen.Count);
    }

    [Fact]
    public void Edge_mode_reports_again_after_a_drain_and_new_data()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            pair.Drain();
        }, mode: TriggerMode.Edge);

        for (int round = 1; round <= 5; round++)
        {
            // Let the loop look once at the drained socket (so the readiness is seen gone), then send the same amount again.
            h.Settle(2, 10);
            pair.Peer.Send(OneByte);
            LoopHarness.WaitUntil(() => seen.Count >= round, $"edge {round}");
        }

        h.Settle();
        Assert.Equal(5, seen.Count);
    }

    [SkippableFact]
    public void Linux_arrival_counter_is_tcp_info_bytes_received()
    {
        // The ABI fact the edge emulation relies on: TCP_INFO's tcpi_bytes_received, at its documented offset, counts
        // exactly the bytes that arrived.
        Skip.IfNot(OperatingSystem.IsLinux(), "The arrival counter is read on Linux only.");
        using var pair = SocketPair.Create();
        var info = new byte[512];
        int length = pair.Local.GetRawSocketOption(ManagedArrivalCounter.TcpLevel, ManagedArrivalCounter.TcpInfoOption, info);
        Assert.True(length >= ManagedArrivalCounter.TcpInfoBytesReceivedOffset + 8, $"tcp_info is {length} bytes");
        long before = BitConverter.ToInt64(info, ManagedArrivalCounter.TcpInfoBytesReceivedOffset);
        pair.Peer.Send(new byte[1234]);
        LoopHarness.WaitUntil(() => pair.Local.Available == 1234, "the bytes");
        pair.Local.GetRawSocketOption(ManagedArrivalCounter.TcpLevel, ManagedArrivalCounter.TcpInfoOption, info);
        Assert.Equal(1234, BitConverter.ToInt64(info, ManagedArrivalCounter.TcpInfoBytesReceivedOffset) - before);
    }

    [SkippableFact]
    public void Edge_mode_reports_data_of_the_same_size_that_arrives_right_after_a_drain()
    {
        // Ping-pong of identical one-byte messages: the callback drains and echoes, and the next byte usually lands before
        // the loop looks again, so the receive queue holds as many bytes as at the last look. Only an arrival counter
        // tells this from undrained data (Linux TCP); elsewhere it is the documented limit of the edge emulation.
        Skip.IfNot(OperatingSystem.IsLinux(), "Exact only where the arrival counter exists (Linux TCP).");
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var buffer = new byte[16];
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            int total = 0;
            while (true)
            {
                int n = pair.Local.Receive(buffer, total, buffer.Length - total, SocketFlags.None, out SocketError error);
                if (error != SocketError.Success || n == 0)
                {
                    break;
                }

                total += n;
            }

            // Drained to would-block; echo, then stay busy a little (as a loop with other work would), so that the
            // peer's next byte arrives before the loop looks again.
            pair.Local.Send(buffer, 0, total, SocketFlags.None, out _);
            var busy = Stopwatch.StartNew();
            while (busy.Elapsed.TotalMilliseconds < 0.2)
            {
            }
        }, mode: TriggerMode.Edge);

        pair.Peer.ReceiveTimeout = 5000;
        var reply = new byte[1];
        for (int i = 0; i < 500; i++)
        {
            pair.Peer.Send(OneByte);
            Assert.Equal(1, pair.Peer.Receive(reply));
        }
    }

    [Fact]
    public void OneShot_reports_once_then_again_after_rearm()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => seen.Add(rd), mode: TriggerMode.OneShot);

        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "the one shot");
        h.Settle();
        pair.Peer.Send(OneByte);
        Thread.Sleep(100);
        h.Settle();
        Assert.Equal(1, seen.Count);

        // Re-armed from another thread while the loop waits: the data is still there, so it fires again, once.
        reg.Rearm();
        LoopHarness.WaitUntil(() => seen.Count >= 2, "the re-armed shot");
        h.Settle();
        Thread.Sleep(100);
        Assert.Equal(2, seen.Count);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(300)]
    public void Interest_change_from_another_thread_takes_effect_while_the_loop_waits(int idle)
    {
        // With 300 idle registrations the blocking wait is spread over helper threads too.
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        using IdleRegistrations idleSockets = IdleRegistrations.Register(h.Loop, idle);
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.None, (r, rd) => seen.Add(rd));
        pair.Peer.Send(OneByte);
        h.Settle();
        Thread.Sleep(50);
        Assert.Equal(0, seen.Count);

        // The loop now sleeps without a timeout (no timers, no posts): only the backend's own wake-up can make the change count.
        var sw = Stopwatch.StartNew();
        reg.ChangeInterest(Interest.Readable);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "the callback after ChangeInterest", seconds: 5);
        Assert.True(sw.ElapsedMilliseconds < 1000, $"took {sw.ElapsedMilliseconds} ms");
        Assert.Equal(Readiness.Readable, seen.First);

        // And back: no more callbacks though the byte is still unread.
        reg.ChangeInterest(Interest.None);
        h.Settle();
        int count = seen.Count;
        Thread.Sleep(100);
        Assert.Equal(count, seen.Count);
    }

    [Fact]
    public void Registration_added_from_another_thread_while_the_loop_waits_is_watched_promptly()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        h.Settle();
        pair.Peer.Send(OneByte);
        Thread.Sleep(20);
        var seen = new ReadinessLog();
        var sw = Stopwatch.StartNew();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            pair.Drain();
        });
        LoopHarness.WaitUntil(() => seen.Count >= 1, "the callback of the new registration", seconds: 5);
        Assert.True(sw.ElapsedMilliseconds < 1000, $"took {sw.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void Registration_disposed_during_a_wait_never_calls_back()
    {
        using var h = StartLoop();
        int late = 0;
        for (int i = 0; i < 100; i++)
        {
            using var pair = SocketPair.Create();
            int calls = 0;
            Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => Interlocked.Increment(ref calls));

            // Dispose from this thread while the peer's byte is on its way: the loop may be scanning, blocked, or
            // about to commit a report for it.
            pair.Peer.Send(OneByte);
            if (i % 2 == 0)
            {
                Thread.SpinWait(50 * i);
            }

            reg.Dispose();

            // A callback that had already started may finish; once the loop has run an iteration past Dispose, none may come.
            h.Invoke(() => true);
            int before = Volatile.Read(ref calls);
            h.Settle(2, 4);
            late += Volatile.Read(ref calls) - before;
        }

        Assert.Equal(0, late);
    }

    /// <summary>Sockets registered readable that never become ready: the idle registrations a wait must also scan.</summary>
    private sealed class IdleRegistrations : IDisposable
    {
        private readonly List<SocketPair> _pairs = new();
        private readonly List<Registration> _registrations = new();

        public static IdleRegistrations Register(EventLoop loop, int count)
        {
            var idle = new IdleRegistrations();
            try
            {
                for (int i = 0; i < count; i++)
                {
                    SocketPair p = SocketPair.Create();
                    idle._pairs.Add(p);
                    idle._registrations.Add(loop.Register(p.Local, Interest.Readable, (r, rd) => { }));
                }

                return idle;
            }
            catch
            {
                idle.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            _registrations.ForEach(r => r.Dispose());
            _pairs.ForEach(p => p.Dispose());
        }
    }

    /// <summary>A thread-safe record of the readiness values a callback saw.</summary>
    private sealed class ReadinessLog
    {
        private readonly List<Readiness> _items = new();

        public int Count
        {
            get
            {
                lock (_items)
                {
                    return _items.Count;
                }
            }
        }

        public Readiness First
        {
            get
            {
                lock (_items)
                {
                    return _items[0];
                }
            }
        }

        public Readiness Last
        {
            get
            {
                lock (_items)
                {
                    return _items[^1];
                }
            }
        }

        public Readiness Union
        {
            get
            {
                lock (_items)
                {
                    Readiness all = Readiness.None;
                    _items.ForEach(r => all |= r);
                    return all;
                }
            }
        }

        public void Add(Readiness readiness)
        {
            lock (_items)
            {
                _items.Add(readiness);
            }
        }

        public override string ToString()
        {
            lock (_items)
            {
                return string.Join(", ", _items);
            }
        }
    }
}
