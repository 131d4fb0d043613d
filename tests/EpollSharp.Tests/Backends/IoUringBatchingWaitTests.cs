using System.IO;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using EpollSharp.Backends;
using EpollSharp.Connections;
using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// Batching waits of the io_uring backend (Linux 6.12's <c>min_wait_usec</c>, on a ring bound to the loop's thread): a
/// wait that asks for many completions waits at most the min-wait for them and returns with what arrived, but a timer's
/// deadline and a wake-up from another thread end it at once. The tests stretch the min-wait to seconds, so that a wait
/// that overstayed would be plain to see (the bounds asserted are a fraction of it, not speeds); real kernel, real sockets.
/// </summary>
public sealed class IoUringBatchingWaitTests
{
    /// <summary>A min-wait far longer than anything these tests wait for.</summary>
    private const uint LongMinWaitMicroseconds = 4_000_000;

    private readonly ITestOutputHelper _output;

    public IoUringBatchingWaitTests(ITestOutputHelper output) => _output = output;

    private IoUringBackend NewBatchingBackend()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        var backend = new IoUringBackend(64, 0, completions: false);
        if (!backend.BatchingWaits)
        {
            _output.WriteLine($"kernel {Environment.OSVersion.Version}, issuer-bound {backend.IssuerBound}");
            backend.Dispose();
            Skip.If(true, "batching waits need an issuer-bound ring and IORING_FEAT_MIN_TIMEOUT (Linux 6.12)");
        }

        backend.MinWaitMicroseconds = LongMinWaitMicroseconds;
        backend.MinCompleteOverride = 1000;

        // The first wait binds the ring to this thread and arms the wake-up poll.
        Span<BackendEvent> events = stackalloc BackendEvent[8];
        backend.Wait(events, 0);
        return backend;
    }

    [SkippableFact]
    public void The_min_wait_setting_is_parsed_and_clamped()
    {
        Assert.Equal((IoUringBackend.DefaultMinWaitMicroseconds, false), IoUringBackend.ParseMinWait(null));
        Assert.Equal((IoUringBackend.DefaultMinWaitMicroseconds, false), IoUringBackend.ParseMinWait("fast"));
        Assert.Equal((IoUringBackend.DefaultMinWaitMicroseconds, false), IoUringBackend.ParseMinWait("-5"));
        Assert.Equal((0u, true), IoUringBackend.ParseMinWait("0"));
        Assert.Equal((20u, true), IoUringBackend.ParseMinWait(" 20 "));
        Assert.Equal((IoUringBackend.MaxMinWaitMicroseconds, true), IoUringBackend.ParseMinWait("999999"));
    }

    [SkippableFact]
    public void A_batching_wait_ends_at_a_wake_from_another_thread()
    {
        using IoUringBackend backend = NewBatchingBackend();

        // This thread's id in the kernel: the waker wakes once the thread sleeps inside io_uring_enter (the kernel's wait
        // itself, not the way into it, where a wake-up's timeout could fire before the wait takes note of the timeouts).
        string task = Path.GetFileName(Directory.ResolveLinkTarget("/proc/thread-self", returnFinalTarget: false)!.FullName);
        for (int round = 0; round < 3; round++)
        {
            var waker = new Thread(() =>
            {
                var until = Stopwatch.StartNew();
                while (!SleepsInIoUringEnter(task) && until.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Sleep(1);
                }

                backend.Wake();
            });
            var sw = Stopwatch.StartNew();
            waker.Start();
            var events = new BackendEvent[8];
            int n = backend.Wait(events, -1);
            sw.Stop();
            waker.Join();
            _output.WriteLine($"round {round}: {n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");

            // The wake-up ended the wait, not the min-wait (4 s) nor anything else: a wake-up yields no event.
            Assert.Equal(0, n);
            Assert.True(sw.Elapsed < TimeSpan.FromMicroseconds(LongMinWaitMicroseconds / 2), $"the wait took {sw.Elapsed}: the wake-up waited for the min-wait");
        }
    }

    /// <summary>Whether the thread <paramref name="task"/> of this process sleeps in <c>io_uring_enter</c> (426 on every 64-bit ABI).</summary>
    private static bool SleepsInIoUringEnter(string task)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/self/task/{task}/stat");
            char state = stat[stat.LastIndexOf(')') + 2];
            string syscall = File.ReadAllText($"/proc/self/task/{task}/syscall");
            return state == 'S' && syscall.StartsWith("426 ", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// A loop on the completion path with enough connections for its waits to batch (their receives in flight), and a
    /// min-wait of 1 s: after a burst (every client sends at once; the waits batch, and everything is echoed), work
    /// posted from another thread ends the batching wait at once, a lone echo on the quiet loop is served at once (a
    /// wait batches only after one that found several receives), and a timer fires at its time.
    /// </summary>
    [SkippableFact]
    public void A_loop_that_batches_serves_a_lone_echo_a_timer_and_posted_work_at_once()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using var server = new EchoServer(EventLoopBackend.IoUring, new Echo(), ioUringCompletions: true);
        IoUringBackend backend = BatchingBackendOf(server);
        byte[] message = { 1, 2, 3, 4 };
        byte[] echo = new byte[4];
        List<Socket> clients = ConnectEchoed(server, 2 * IoUringBackend.MinWaitInFlight, message);
        try
        {

            const uint minWait = 1_000_000;
            backend.MinWaitMicroseconds = minWait;
            TimeSpan bound = TimeSpan.FromMicroseconds(minWait / 2);
            string loopTask = server.Harness.Invoke(() => Path.GetFileName(Directory.ResolveLinkTarget("/proc/thread-self", returnFinalTarget: false)!.FullName));
            for (int round = 0; round < 2; round++)
            {
                // A burst: every client sends at once, and all is echoed (the waits batch; the last replies may wait for
                // the min-wait, the company they waited for being gone).
                var sw = Stopwatch.StartNew();
                foreach (Socket client in clients)
                {
                    client.Send(message);
                }

                foreach (Socket client in clients)
                {
                    ReadEcho(client, message, echo);
                }

                TimeSpan burst = sw.Elapsed;

                // Work posted from another thread while the loop sleeps, in a batching wait after the burst.
                LoopHarness.WaitUntil(() => SleepsInIoUringEnter(loopTask), "the loop sleeps in io_uring_enter");
                using var ran = new ManualResetEventSlim();
                sw.Restart();
                server.Loop.Post(ran.Set);
                Assert.True(ran.Wait(TimeSpan.FromSeconds(10)), "the posted work did not run");
                TimeSpan posted = sw.Elapsed;

                // A lone echo on the quiet loop.
                LoopHarness.WaitUntil(() => SleepsInIoUringEnter(loopTask), "the loop sleeps in io_uring_enter");
                sw.Restart();
                EchoOn(clients[round], message, echo);
                TimeSpan lone = sw.Elapsed;

                // A timer.
                LoopHarness.WaitUntil(() => SleepsInIoUringEnter(loopTask), "the loop sleeps in io_uring_enter");
                using var fired = new ManualResetEventSlim();
                TimeSpan firedAfter = TimeSpan.Zero;
                sw.Restart();
                server.Loop.Schedule(TimeSpan.FromMilliseconds(30), _ =>
                {
                    firedAfter = sw.Elapsed;
                    fired.Set();
                });
                Assert.True(fired.Wait(TimeSpan.FromSeconds(10)), "the timer did not fire");
                _output.WriteLine($"round {round}: burst of {clients.Count} echoes {burst.TotalMilliseconds:F2} ms, posted work after {posted.TotalMilliseconds:F2} ms, lone echo {lone.TotalMilliseconds:F2} ms, 30 ms timer after {firedAfter.TotalMilliseconds:F2} ms");
                Assert.True(posted < bound, $"the posted work ran after {posted}: the wake-up waited for the min-wait");
                Assert.True(lone < bound, $"a lone echo took {lone}: it waited for the min-wait");
                Assert.True(firedAfter >= TimeSpan.FromMilliseconds(29), $"the timer fired after {firedAfter}, before its time");
                Assert.True(firedAfter < bound, $"the timer fired after {firedAfter}: it waited for the min-wait");
            }

            server.AssertNoLoopErrors();
        }
        finally
        {
            foreach (Socket client in clients)
            {
                client.Dispose();
            }
        }
    }

    [SkippableFact]
    public void A_loop_that_batches_serves_a_few_busy_clients_among_many_idle_ones_without_waiting_out_the_min_wait()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using var server = new EchoServer(EventLoopBackend.IoUring, new Echo(), ioUringCompletions: true);
        IoUringBackend backend = BatchingBackendOf(server);
        byte[] message = { 1, 2, 3, 4 };

        // Many connections, each with its receive in flight, nearly all of them idle.
        List<Socket> clients = ConnectEchoed(server, 4 * IoUringBackend.MinWaitInFlight, message);
        try
        {
            // Four clients echo back and forth in step (all send, then all read their echo, as a load generator's
            // thread does): the loop's waits find two or more arrivals, so they batch; asking for a quarter of what is in
            // flight, each would wait out the min-wait.
            const uint minWait = 300_000;
            const int roundTrips = 30;
            backend.MinWaitMicroseconds = minWait;
            Socket[] busy = { clients[0], clients[1], clients[2], clients[3] };
            byte[] echo = new byte[4];
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < roundTrips; i++)
            {
                foreach (Socket client in busy)
                {
                    client.Send(message);
                }

                foreach (Socket client in busy)
                {
                    ReadEcho(client, message, echo);
                }
            }

            TimeSpan took = sw.Elapsed;
            _output.WriteLine($"{roundTrips} round trips of four busy clients among {clients.Count} took {took.TotalMilliseconds:F1} ms with a {minWait / 1000} ms min-wait");

            // A few waits may run out the min-wait while the batch learns what comes; nearly every round trip would take
            // one (30 x 300 ms) if the waits kept asking for a quarter of what is in flight.
            Assert.True(took < TimeSpan.FromMicroseconds(8 * minWait), $"{roundTrips} round trips took {took}: the waits kept waiting for arrivals that were not coming");
            server.AssertNoLoopErrors();
        }
        finally
        {
            foreach (Socket client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public void A_batch_asks_for_what_came_when_less_came_and_for_twice_as_much_when_more_came()
    {
        Assert.Equal(5u, IoUringBackend.FollowBatch(16, 5));
        Assert.Equal(IoUringBackend.MinWaitBusy, IoUringBackend.FollowBatch(16, 1));
        Assert.Equal(IoUringBackend.MinWaitBusy, IoUringBackend.FollowBatch(16, 0));
        Assert.Equal(16u, IoUringBackend.FollowBatch(16, 16));
        Assert.Equal(34u, IoUringBackend.FollowBatch(16, 17));
        Assert.Equal(uint.MaxValue, IoUringBackend.FollowBatch(16, uint.MaxValue - 1));
    }

    /// <summary>The io_uring backend of an echo server on the completion path; skips unless its waits batch.</summary>
    private static IoUringBackend BatchingBackendOf(EchoServer server)
    {
        Skip.If(server.Loop.CompletionIo is null, "io_uring completions unavailable here");
        IoUringBackend backend = (IoUringBackend)typeof(EventLoop).GetField("_backend", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(server.Loop)!;
        Skip.IfNot(backend.BatchingWaits, "batching waits need Linux 6.12");
        return backend;
    }

    /// <summary>Connects <paramref name="count"/> clients, each echoing <paramref name="message"/> once.</summary>
    private static List<Socket> ConnectEchoed(EchoServer server, int count, byte[] message)
    {
        var clients = new List<Socket>();
        byte[] echo = new byte[message.Length];
        for (int i = 0; i < count; i++)
        {
            clients.Add(server.Connect());
            EchoOn(clients[i], message, echo);
        }

        return clients;
    }

    private static void EchoOn(Socket client, byte[] message, byte[] echo)
    {
        client.Send(message);
        ReadEcho(client, message, echo);
    }

    /// <summary>Reads <paramref name="message"/>'s echo into <paramref name="echo"/> and checks it.</summary>
    private static void ReadEcho(Socket client, byte[] message, byte[] echo)
    {
        int total = 0;
        while (total < message.Length)
        {
            int n = client.Receive(echo, total, message.Length - total, SocketFlags.None);
            Assert.True(n > 0, "the server closed a connection");
            total += n;
        }

        Assert.Equal(message, echo);
    }

    private sealed class Echo : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
    }

    [SkippableFact]
    public void A_batching_wait_ends_at_its_deadline()
    {
        using IoUringBackend backend = NewBatchingBackend();
        var events = new BackendEvent[8];
        for (int round = 0; round < 3; round++)
        {
            var sw = Stopwatch.StartNew();
            int n = backend.Wait(events, 50);
            sw.Stop();
            _output.WriteLine($"round {round}: {n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");
            Assert.Equal(0, n);

            // Not before the deadline (1 ms of clock granularity allowed), and not at the min-wait's end (4 s).
            Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(49), $"returned after {sw.Elapsed}, before its deadline");
            Assert.True(sw.Elapsed < TimeSpan.FromMicroseconds(LongMinWaitMicroseconds / 2), $"the wait took {sw.Elapsed}: the deadline waited for the min-wait");
        }
    }

    [SkippableFact]
    public void A_batching_wait_returns_what_arrived_when_the_min_wait_ends()
    {
        using IoUringBackend backend = NewBatchingBackend();
        const uint minWait = 200_000;
        backend.MinWaitMicroseconds = minWait;
        using var pair = Util.SocketPair.CreateBlocking();
        Socket server = pair.Local;
        Socket client = pair.Peer;
        client.Send(new byte[] { 1 });

        // One readable socket, far fewer completions than the wait asks for: it waits out the min-wait (the batch it was
        // waiting for never comes), then returns with the one event, with no deadline of its own.
        backend.Add(new BackendTarget(server.SafeHandle, server), 42, Interest.Readable, TriggerMode.Edge);
        var events = new BackendEvent[8];
        var sw = Stopwatch.StartNew();
        int n = backend.Wait(events, -1);
        sw.Stop();
        _output.WriteLine($"{n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(1, n);
        Assert.Equal(42UL, events[0].Token);
        Assert.True((events[0].Readiness & Readiness.Readable) != 0, events[0].Readiness.ToString());
        Assert.True(sw.Elapsed >= TimeSpan.FromMicroseconds(minWait / 2), $"returned after {sw.Elapsed}: the wait did not batch");

        // With the min-wait off, the same wait returns at the first completion.
        backend.MinWaitMicroseconds = 0;
        client.Send(new byte[] { 2 });
        n = backend.Wait(events, 10_000);
        Assert.Equal(1, n);
        Assert.Equal(42UL, events[0].Token);
    }

    [Fact]
    public void The_adaptive_min_wait_is_the_time_of_twice_the_arrivals_asked_for_or_of_eight_within_its_bounds()
    {
        long f = Stopwatch.Frequency;
        double PerArrival(double microseconds) => microseconds * f / 1_000_000.0;

        // Asked for four arrivals or fewer (or none besides the submissions' completions): the time of eight.
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(0, 0, f));
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(PerArrival(1), 0, f));
        Assert.InRange(IoUringBackend.AdaptiveMinWait(PerArrival(10), 0, f), 79u, 80u);
        Assert.InRange(IoUringBackend.AdaptiveMinWait(PerArrival(10), 4, f), 79u, 80u);
        Assert.InRange(IoUringBackend.AdaptiveMinWait(PerArrival(20), 1, f), 159u, 160u);

        // More arrivals asked for (a quarter of what is in flight): the time of twice as many, within the cap.
        Assert.InRange(IoUringBackend.AdaptiveMinWait(PerArrival(10), 5, f), 99u, 100u);
        Assert.InRange(IoUringBackend.AdaptiveMinWait(PerArrival(6), 16, f), 191u, 192u);
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(PerArrival(1), 16, f));
        Assert.Equal(IoUringBackend.AdaptiveMaxMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(PerArrival(7), 250, f));
        Assert.Equal(IoUringBackend.AdaptiveMaxMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(PerArrival(100), 0, f));
        Assert.Equal(IoUringBackend.AdaptiveMaxMinWaitMicroseconds, IoUringBackend.AdaptiveMinWait(PerArrival(1e9), 0, f));

        // The first sample is taken as it is; later ones move the average by an eighth; an idle gap counts as the cap.
        double first = IoUringBackend.FoldArrivals(0, (long)PerArrival(40), 4, f);
        Assert.Equal(PerArrival(10), first, 3);
        Assert.Equal(PerArrival(10 + ((30 - 10) / 8.0)), IoUringBackend.FoldArrivals(first, (long)PerArrival(30), 1, f), 3);
        double capped = IoUringBackend.FoldArrivals(0, (long)PerArrival(3_600_000_000.0), 1, f);
        Assert.Equal(PerArrival(IoUringBackend.AdaptiveMaxMinWaitMicroseconds), capped, 3);
    }

    [SkippableFact]
    public void The_min_wait_follows_the_arrival_rate_and_a_set_one_stays()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using var backend = new IoUringBackend(64, 0, completions: false);
        Skip.IfNot(backend.BatchingWaits, "batching waits need an issuer-bound ring and IORING_FEAT_MIN_TIMEOUT (Linux 6.12)");
        Skip.IfNot(backend.MinWaitAdaptive, "EPOLLSHARP_IO_URING_MIN_WAIT_US sets a fixed min-wait in this environment");
        using var pair = Util.SocketPair.CreateBlocking();
        Socket server = pair.Local;
        Socket client = pair.Peer;
        backend.Add(new BackendTarget(server.SafeHandle, server), 7, Interest.Readable, TriggerMode.Level);
        var events = new BackendEvent[8];
        byte[] sink = new byte[64];
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, backend.EffectiveMinWaitMicroseconds);

        // Arrivals milliseconds apart (each byte read, so each wait has one readiness event): the min-wait grows to its cap.
        for (int i = 0; i < 4; i++)
        {
            Thread.Sleep(3);
            client.Send(new byte[] { 1 });
            Assert.Equal(1, backend.Wait(events, 10_000));
            Assert.Equal(7UL, events[0].Token);
            server.Receive(sink);
        }

        Assert.Equal(IoUringBackend.AdaptiveMaxMinWaitMicroseconds, backend.EffectiveMinWaitMicroseconds);

        // Then one arrival per wait as fast as the loop turns (the byte left unread, level-triggered): it comes down to
        // the default within a few hundred waits (the least seen counts: a preempted wait lifts it again for a while).
        client.Send(new byte[] { 1 });
        uint least = uint.MaxValue;
        for (int i = 0; i < 2_000 && least > IoUringBackend.DefaultMinWaitMicroseconds; i++)
        {
            Assert.Equal(1, backend.Wait(events, 10_000));
            least = Math.Min(least, backend.EffectiveMinWaitMicroseconds);
        }

        _output.WriteLine($"least min-wait while arrivals were back to back: {least} us");
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, least);

        // A min-wait set by hand is used as it is, whatever the rate.
        backend.MinWaitMicroseconds = 300;
        Assert.False(backend.MinWaitAdaptive);
        server.Receive(sink);
        for (int i = 0; i < 3; i++)
        {
            Thread.Sleep(3);
            client.Send(new byte[] { 1 });
            Assert.Equal(1, backend.Wait(events, 10_000));
            server.Receive(sink);
        }

        Assert.Equal(300u, backend.EffectiveMinWaitMicroseconds);
    }
}
