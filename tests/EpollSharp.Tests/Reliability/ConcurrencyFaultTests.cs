using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Races between the loop thread and other threads: registrations disposed while their event is being dispatched, the loop
/// disposed while threads post and timers fire, timers changed and cancelled from many threads, descriptor numbers reused
/// under load. Each checks what the documentation promises, and that nothing leaks.
/// </summary>
[Collection(ProcessWide.Name)]
public class ConcurrencyFaultTests
{
    private readonly ITestOutputHelper _output;

    public ConcurrencyFaultTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// Sixteen level-triggered registrations whose sockets stay readable, so their callbacks run on every iteration; another
    /// thread disposes them at random moments (and closes the sockets) and registers new ones, 2,000 times. Promised: once
    /// Dispose has returned on another thread, at most the callback already running finishes, and after the loop's next full
    /// iteration none is called again; no callback ever sees a registration other than its own.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Registrations_disposed_from_another_thread_during_dispatch_are_not_called_afterwards(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        DisposeDuringDispatch(backend, 2000);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (int disposals, long callbacks, int startedAfter, int maxStartedAfter) = DisposeDuringDispatch(backend, 2000);
        _output.WriteLine($"{disposals} disposals from another thread during {callbacks:N0} callbacks; {startedAfter} callbacks were already past the check when Dispose returned (at most {maxStartedAfter} for one registration)");
        Assert.InRange(maxStartedAfter, 0, 1);
        Resources.AssertBackTo(baseline, _output, "disposals during dispatch");
    }

    private static (int Disposals, long Callbacks, int StartedAfter, int MaxStartedAfter) DisposeDuringDispatch(EventLoopBackend backend, int disposals)
    {
        const int Live = 16;
        var errors = new ConcurrentQueue<Exception>();
        using var h = new LoopHarness(Backends.CreateLoop(backend, onError: errors.Enqueue));
        var slots = new Tracked?[Live];
        long callbacks = 0;
        int wrong = 0;
        ReadinessCallback onReady = static (r, _) =>
        {
            var t = (Tracked)r.State!;
            if (!ReferenceEquals(t.Registration, r) && t.Registration is not null)
            {
                Interlocked.Increment(ref t.Wrong);
            }

            if (Volatile.Read(ref t.Disposed) != 0)
            {
                Interlocked.Increment(ref t.CallsAfterDispose);
            }

            Interlocked.Increment(ref t.Calls);
            Thread.SpinWait(20);
        };

        Tracked Add()
        {
            var t = new Tracked(SocketPair.Create());
            t.Pair.Peer.Send(new byte[] { 1 }); // never read: level-triggered, it is reported on every iteration
            t.Registration = h.Loop.Register(t.Pair.Local, Interest.Readable, onReady, t);
            return t;
        }

        for (int i = 0; i < Live; i++)
        {
            slots[i] = Add();
        }

        var rng = new Random(11);
        var done = new List<Tracked>();
        for (int n = 0; n < disposals; n++)
        {
            int i = rng.Next(Live);
            Tracked victim = slots[i]!;
            Thread.SpinWait(rng.Next(0, 2000));
            victim.Registration!.Dispose();
            Volatile.Write(ref victim.Disposed, 1);
            if (n % 2 == 0)
            {
                victim.Pair.Dispose(); // also close the socket at once: its number is free for the next Add
            }

            done.Add(victim);
            slots[i] = Add();
        }

        h.Settle(iterations: 3, sleepMs: 20);
        int[] startedAfter = done.Select(t => Volatile.Read(ref t.CallsAfterDispose)).ToArray();
        h.Settle(iterations: 3, sleepMs: 20);
        int[] later = done.Select(t => Volatile.Read(ref t.CallsAfterDispose)).ToArray();
        Assert.Equal(startedAfter, later); // nothing more after the next full iteration
        foreach (Tracked t in done.Concat(slots.Select(x => x!)))
        {
            callbacks += t.Calls;
            wrong += t.Wrong;
        }

        h.Invoke(() =>
        {
            foreach (Tracked? t in slots)
            {
                t!.Registration!.Dispose();
            }
        });
        foreach (Tracked t in done.Concat(slots.Select(x => x!)))
        {
            t.Pair.Dispose();
        }

        Assert.Equal(0, wrong);
        Assert.Empty(errors);
        Assert.Equal(0, h.Invoke(() => h.Loop.RegistrationCount));
        return (disposals, callbacks, startedAfter.Sum(), startedAfter.Max());
    }

    private sealed class Tracked
    {
        public readonly SocketPair Pair;
        public Registration? Registration;
        public int Disposed;
        public int CallsAfterDispose;
        public int Calls;
        public int Wrong;

        public Tracked(SocketPair pair) => Pair = pair;
    }

    /// <summary>
    /// Four threads post work (TryPost) and schedule, change and cancel timers as fast as they can; a repeating 1 ms timer
    /// fires; the loop is disposed from yet another thread in the middle of it, 20 times over. Promised: Dispose returns
    /// (it waits for the current iteration); every post that was accepted (TryPost returned true) ran, exactly once, on
    /// the loop thread; afterwards posting fails (TryPost false, Post and Schedule ObjectDisposedException), no callback
    /// runs, and the loop's descriptors are closed.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_loop_disposed_while_threads_post_and_timers_fire_runs_what_it_accepted_and_releases_everything(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        DisposeUnderFire(backend, 20);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (long accepted, long refused, long timerRuns) = DisposeUnderFire(backend, 20);
        _output.WriteLine($"20 loops disposed under fire: {accepted:N0} posts accepted and run, {refused:N0} refused after Dispose, {timerRuns:N0} timer callbacks");
        Resources.AssertBackTo(baseline, _output, "loops disposed under fire");
    }

    private static (long Accepted, long Refused, long TimerRuns) DisposeUnderFire(EventLoopBackend backend, int rounds)
    {
        long accepted = 0, refused = 0, timerRuns = 0;
        for (int round = 0; round < rounds; round++)
        {
            var errors = new ConcurrentQueue<Exception>();
            var failures = new ConcurrentQueue<string>();
            var loop = Backends.CreateLoop(backend, onError: errors.Enqueue);
            Task run = loop.Start();
            long ran = 0, offThread = 0, afterDispose = 0, roundAccepted = 0, roundRefused = 0, roundTimers = 0;
            int disposed = 0;
            Action<object?> work = _ =>
            {
                if (!loop.IsOnLoopThread)
                {
                    Interlocked.Increment(ref offThread);
                }

                if (Volatile.Read(ref disposed) != 0)
                {
                    Interlocked.Increment(ref afterDispose);
                }

                Interlocked.Increment(ref ran);
            };
            Action<LoopTimer> tick = _ =>
            {
                if (Volatile.Read(ref disposed) != 0)
                {
                    Interlocked.Increment(ref afterDispose);
                }

                Interlocked.Increment(ref roundTimers);
            };
            loop.ScheduleRepeating(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1), tick);
            using var go = new Barrier(5);
            var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
            {
                var rng = new Random(t + (round * 10));
                var timers = new List<LoopTimer>();
                go.SignalAndWait();
                while (true)
                {
                    if (loop.TryPost(work, null))
                    {
                        Interlocked.Increment(ref roundAccepted);
                    }
                    else
                    {
                        Interlocked.Increment(ref roundRefused);
                        if (Record.Exception(() => loop.Post(() => { })) is not ObjectDisposedException)
                        {
                            failures.Enqueue("Post after Dispose did not throw ObjectDisposedException");
                        }

                        if (Record.Exception(() => loop.Schedule(TimeSpan.Zero, tick)) is not ObjectDisposedException)
                        {
                            failures.Enqueue("Schedule after Dispose did not throw ObjectDisposedException");
                        }

                        timers.ForEach(x => x.Cancel()); // harmless after Dispose
                        return;
                    }

                    try
                    {
                        switch (rng.Next(3))
                        {
                            case 0:
                                timers.Add(loop.Schedule(TimeSpan.FromMilliseconds(rng.Next(0, 3)), tick));
                                break;
                            case 1 when timers.Count > 0:
                                timers[rng.Next(timers.Count)].Change(TimeSpan.FromMilliseconds(rng.Next(0, 3)));
                                break;
                            case 2 when timers.Count > 0:
                                timers[rng.Next(timers.Count)].Cancel();
                                break;
                        }
                    }
                    catch (ObjectDisposedException)
                    {
                        // Disposed between the post and this call: the next TryPost returns false.
                    }
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            go.SignalAndWait();
            Thread.Sleep(5 + (round % 5) * 5);
            var sw = Stopwatch.StartNew();
            loop.Dispose();
            Volatile.Write(ref disposed, 1);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), "Dispose took more than 10 s");
            threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(10)), "a posting thread did not see the loop disposed"));
            Assert.True(run.Wait(TimeSpan.FromSeconds(10)), "the loop thread did not end");
            Assert.Empty(errors);
            Assert.Empty(failures);
            Assert.Equal(Interlocked.Read(ref roundAccepted), Interlocked.Read(ref ran));
            Assert.Equal(0, Interlocked.Read(ref offThread));
            Assert.Equal(0, Interlocked.Read(ref afterDispose));
            Assert.Equal(0, loop.ActiveTimerCount);
            Assert.Equal(0, loop.RegistrationCount);
            Assert.False(loop.TryPost(work, null));
            accepted += roundAccepted;
            refused += roundRefused;
            timerRuns += roundTimers;
        }

        return (accepted, refused, timerRuns);
    }

    /// <summary>
    /// 2,000 timers scheduled from four threads with due times of 20 to 200 ms; other threads change them and cancel them while
    /// the loop fires the rest. Promised: a timer cancelled well before it is due (40 ms or more) never fires; one never
    /// cancelled fires exactly once, never early (against its last Change); the timer heap ends empty and consistent.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Timers_changed_and_cancelled_from_other_threads_fire_exactly_as_promised(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        TimerRaces(backend, 2000);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        TimerRaces(backend, 2000);
        Resources.AssertBackTo(baseline, _output, "timer races");
    }

    private void TimerRaces(EventLoopBackend backend, int count)
    {
        var errors = new ConcurrentQueue<Exception>();
        using var h = new LoopHarness(Backends.CreateLoop(backend, onError: errors.Enqueue));
        int Count = count;
        var timers = new TimerRecord[Count];
        var clock = Stopwatch.StartNew();
        Action<LoopTimer> fired = static t =>
        {
            var record = (TimerRecord)t.State!;
            record.FiredAtMs = record.Clock.Elapsed.TotalMilliseconds;
            Interlocked.Increment(ref record.Fired);
        };

        // Four threads schedule; as each timer exists, a worker decides its fate.
        var scheduled = new BlockingCollection<int>();
        var nearDue = new ConcurrentBag<TimerRecord>();
        var schedulers = Enumerable.Range(0, 4).Select(t => OwnThreads.Start(() =>
        {
            var rng = new Random(t);
            for (int i = t; i < Count; i += 4)
            {
                var record = new TimerRecord(clock) { DueMs = rng.Next(20, 200) };
                record.ScheduledAtMs = clock.Elapsed.TotalMilliseconds;
                record.Timer = h.Loop.Schedule(TimeSpan.FromMilliseconds(record.DueMs), fired, record);
                timers[i] = record;
                scheduled.Add(i);
            }
        })).ToArray();
        var changers = Enumerable.Range(0, 4).Select(t => OwnThreads.Start(() =>
        {
            var rng = new Random(100 + t);
            foreach (int i in scheduled.GetConsumingEnumerable())
            {
                TimerRecord record = timers[i];
                switch (rng.Next(4))
                {
                    case 0:
                        // Cancel. Timers never fire early, so one whose Cancel returned before its due time never fires.
                        CancelAndClassify(record);
                        break;
                    case 1:
                        // Change it to a new due time from now (cancelled first, so that the old due time cannot fire
                        // in between: Change restarts a timer that has fired).
                        if (CancelAndClassify(record))
                        {
                            int due = rng.Next(10, 100);
                            record.CancelledEarly = false;
                            record.ScheduledAtMs = clock.Elapsed.TotalMilliseconds;
                            record.DueMs = due;
                            record.Timer!.Change(TimeSpan.FromMilliseconds(due));
                        }

                        break;
                    case 2:
                        // Cancelled near its due time, below.
                        nearDue.Add(record);
                        break;
                }
            }
        })).ToArray();

        bool CancelAndClassify(TimerRecord record)
        {
            record.Timer!.Cancel();
            bool early = clock.Elapsed.TotalMilliseconds < record.ScheduledAtMs + record.DueMs - 1;
            record.CancelledEarly = early;
            record.RacedCancel = !early;
            return early;
        }

        Assert.All(schedulers, t => Assert.True(t.Join(TimeSpan.FromSeconds(30))));
        scheduled.CompleteAdding();
        Assert.All(changers, t => Assert.True(t.Join(TimeSpan.FromSeconds(30))));

        // Cancel these around their due time (from 2 ms before to 2 ms after): each fires at most once.
        var jitter = new Random(5);
        foreach (TimerRecord record in nearDue.OrderBy(r => r.ScheduledAtMs + r.DueMs))
        {
            double at = record.ScheduledAtMs + record.DueMs + jitter.Next(-2, 3);
            while (clock.Elapsed.TotalMilliseconds < at)
            {
                Thread.Sleep(0);
            }

            CancelAndClassify(record);
        }

        LoopHarness.WaitUntil(() => h.Loop.ActiveTimerCount == 0, "every timer fired or was cancelled", 20);
        h.Settle();

        int early = 0, never = 0, twice = 0, firedAfterEarlyCancel = 0;
        foreach (TimerRecord r in timers)
        {
            if (r.Fired > 1)
            {
                twice++;
            }

            if (r.CancelledEarly)
            {
                firedAfterEarlyCancel += r.Fired;
                continue;
            }

            if (r.RacedCancel)
            {
                continue;
            }

            if (r.Fired == 0)
            {
                never++;
            }
            else if (r.FiredAtMs < r.ScheduledAtMs + r.DueMs - 1)
            {
                early++;
            }
        }

        _output.WriteLine($"{Count} timers: {timers.Count(r => r.CancelledEarly)} cancelled early, {timers.Count(r => r.RacedCancel)} cancelled within 2 ms of their due time ({timers.Count(r => r.RacedCancel && r.Fired == 1)} of those fired), {timers.Count(r => r.Fired == 1)} fired");
        Assert.Equal(0, twice);
        Assert.Equal(0, firedAfterEarlyCancel);
        Assert.Equal(0, never);
        Assert.Equal(0, early);
        Assert.Empty(errors);
    }

    private sealed class TimerRecord
    {
        public readonly Stopwatch Clock;
        public LoopTimer? Timer;
        public int DueMs;
        public double ScheduledAtMs;
        public double FiredAtMs;
        public int Fired;
        public bool CancelledEarly;
        public bool RacedCancel;

        public TimerRecord(Stopwatch clock) => Clock = clock;
    }

    /// <summary>
    /// Descriptor numbers reused under load: 32 connections, each of whose peers sends its own id over and over; a churn thread
    /// closes a random one (registration disposed from that thread, socket closed) and opens a new one that usually gets the
    /// same descriptor number, 1,500 times, while the loop reads. Every byte a callback reads must be its own connection's id.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Descriptor_numbers_reused_under_load_never_cross_registrations(EventLoopBackend backend)
    {
        Backends.SkipUnlessAvailable(backend);
        ReuseUnderLoad(backend, 1500);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        (int churns, int reused, long bytes) = ReuseUnderLoad(backend, 1500);
        _output.WriteLine($"{churns} connections replaced under load, {reused} of them got the number of the one just closed; {bytes:N0} bytes read, each by its own connection's callback");
        Assert.True(reused > churns / 10, "descriptor numbers were rarely reused: the test did not test reuse");
        Resources.AssertBackTo(baseline, _output, "descriptor reuse");
    }

    private static (int Churns, int Reused, long Bytes) ReuseUnderLoad(EventLoopBackend backend, int churns)
    {
        const int Live = 32;
        var errors = new ConcurrentQueue<Exception>();
        using var h = new LoopHarness(Backends.CreateLoop(backend, onError: errors.Enqueue));
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(64);
        long bytes = 0;
        int crossed = 0;
        int nextId = 1;
        ReadinessCallback onReady = (r, readiness) =>
        {
            var c = (Conn)r.State!;
            Span<byte> buffer = stackalloc byte[4096];
            while (true)
            {
                int n;
                SocketError error;
                try
                {
                    n = r.Socket!.Receive(buffer, SocketFlags.None, out error);
                }
                catch (ObjectDisposedException)
                {
                    // Disposed by the churn thread while this callback was already running (allowed: see Registration).
                    return;
                }

                if (error != SocketError.Success || n == 0)
                {
                    if (error != SocketError.WouldBlock)
                    {
                        try
                        {
                            r.ChangeInterest(Interest.None);
                        }
                        catch (ObjectDisposedException)
                        {
                            // Disposed by the churn thread while this callback ran (allowed; ChangeInterest then throws).
                        }
                    }

                    return;
                }

                foreach (byte b in buffer[..n])
                {
                    if (b != c.Id)
                    {
                        Interlocked.Increment(ref crossed);
                    }
                }

                Interlocked.Add(ref bytes, n);
            }
        };

        Conn Open()
        {
            var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            peer.Connect(listener.LocalEndPoint!);
            Socket local = listener.Accept();
            local.Blocking = false;
            var c = new Conn(local, peer, (byte)(1 + (Interlocked.Increment(ref nextId) % 250)));
            c.Registration = h.Loop.Register(local, Interest.Readable, onReady, c);
            return c;
        }

        var live = new Conn[Live];
        for (int i = 0; i < Live; i++)
        {
            live[i] = Open();
        }

        using var stop = new CancellationTokenSource();
        var senders = Enumerable.Range(0, 2).Select(s => OwnThreads.Start(() =>
        {
            var rng = new Random(s);
            var chunk = new byte[512];
            while (!stop.IsCancellationRequested)
            {
                Conn c = Volatile.Read(ref live[rng.Next(Live)]);
                chunk.AsSpan().Fill(c.Id);
                try
                {
                    c.Peer.Send(chunk, 0, rng.Next(1, chunk.Length), SocketFlags.None, out _);
                }
                catch (ObjectDisposedException)
                {
                    // Replaced meanwhile.
                }
            }
        })).ToArray();
        var rng = new Random(3);
        int reused = 0;
        for (int n = 0; n < churns; n++)
        {
            int i = rng.Next(Live);
            Conn old = live[i];
            long oldFd = old.Local.Handle.ToInt64();
            old.Registration!.Dispose();
            old.Local.Dispose();
            old.Peer.Dispose();
            Conn fresh = Open();
            if (fresh.Local.Handle.ToInt64() == oldFd || fresh.Peer.Handle.ToInt64() == oldFd)
            {
                reused++;
            }

            Volatile.Write(ref live[i], fresh);
        }

        stop.Cancel();
        Assert.All(senders, t => Assert.True(t.Join(TimeSpan.FromSeconds(30))));
        h.Settle();
        h.Invoke(() =>
        {
            foreach (Conn c in live)
            {
                c.Registration!.Dispose();
            }
        });
        foreach (Conn c in live)
        {
            c.Local.Dispose();
            c.Peer.Dispose();
        }

        Assert.Equal(0, Volatile.Read(ref crossed));
        Assert.Empty(errors);
        Assert.True(Interlocked.Read(ref bytes) > 0);
        return (churns, reused, Interlocked.Read(ref bytes));
    }

    private sealed class Conn
    {
        public readonly Socket Local;
        public readonly Socket Peer;
        public readonly byte Id;
        public Registration? Registration;

        public Conn(Socket local, Socket peer, byte id)
        {
            Local = local;
            Peer = peer;
            Id = id;
        }
    }
}
