using System.Diagnostics;

namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Posting, timers, exceptions, stop and dispose, on every backend.</summary>
public class LoopTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Posts_from_eight_threads_all_run_once_in_order_per_thread(EventLoopBackend backend)
    {
        const int threads = 8, perThread = 10_000;
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var check = new PostCheck(h.Loop, threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            for (int i = 0; i < perThread; i++)
            {
                h.Loop.Post(static state =>
                {
                    var (check, t, value) = ((PostCheck, int, int))state!;
                    check.Record(t, value);
                }, (check, t, i));
            }
        })).ToList();

        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        LoopHarness.WaitUntil(() => h.Invoke(() => check.Ran.Sum()) == threads * perThread, "all 80,000 posts to run");
        h.Settle();
        Assert.All(check.Ran, n => Assert.Equal(perThread, n));
        Assert.All(check.Last, n => Assert.Equal(perThread - 1, n));
        Assert.Equal(0, check.OutOfOrder);
        Assert.Equal(0, check.OffThread);
    }

    private sealed class PostCheck
    {
        private readonly EventLoop _loop;

        public PostCheck(EventLoop loop, int threads)
        {
            _loop = loop;
            Last = Enumerable.Repeat(-1, threads).ToArray();
            Ran = new int[threads];
        }

        public int[] Last { get; }

        public int[] Ran { get; }

        public int OutOfOrder { get; private set; }

        public int OffThread { get; private set; }

        public void Record(int thread, int value)
        {
            if (!_loop.IsOnLoopThread)
            {
                OffThread++;
            }

            if (Last[thread] != value - 1)
            {
                OutOfOrder++;
            }

            Last[thread] = value;
            Ran[thread]++;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Posted_work_runs_on_the_loop_thread_and_a_wake_before_the_wait_is_not_lost(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        for (int i = 0; i < 200; i++)
        {
            using var done = new ManualResetEventSlim();
            bool onLoop = false;
            h.Loop.Post(() =>
            {
                onLoop = h.Loop.IsOnLoopThread;
                done.Set();
            });
            Assert.True(done.Wait(TimeSpan.FromSeconds(5)), $"post {i} did not run: a wake-up was lost");
            Assert.True(onLoop);
        }

        Assert.False(h.Loop.IsOnLoopThread);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Timers_fire_in_order_and_on_time(EventLoopBackend backend)
    {
        // Tolerance stated: never early; at most 500 ms late on a shared 2-core machine.
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var rng = new Random(1234);
        var delays = Enumerable.Range(0, 30).Select(_ => rng.Next(1, 120)).ToArray();
        var fired = new ConcurrentQueue<(int Index, double AtMs)>();
        var sw = Stopwatch.StartNew();
        h.Invoke(() =>
        {
            for (int i = 0; i < delays.Length; i++)
            {
                h.Loop.Schedule(TimeSpan.FromMilliseconds(delays[i]), t => fired.Enqueue(((int)t.State!, sw.Elapsed.TotalMilliseconds)), i);
            }
        });
        LoopHarness.WaitUntil(() => fired.Count == delays.Length, "all 30 timers to fire");
        var order = fired.ToArray();
        for (int k = 0; k < order.Length; k++)
        {
            double due = delays[order[k].Index];
            Assert.True(order[k].AtMs >= due, $"timer {order[k].Index} due at {due} ms fired early at {order[k].AtMs:F2} ms");
            Assert.True(order[k].AtMs <= due + 500, $"timer {order[k].Index} due at {due} ms fired late at {order[k].AtMs:F2} ms");
            if (k > 0)
            {
                Assert.True(delays[order[k - 1].Index] <= delays[order[k].Index], "timers fired out of due order");
            }
        }

        Assert.Equal(0, h.Invoke(() => h.Loop.ActiveTimerCount));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_sub_millisecond_timer_does_not_busy_loop_and_repeating_timers_tick(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        int ticks = 0;
        var sw = Stopwatch.StartNew();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        loop.ScheduleRepeating(TimeSpan.FromTicks(3000), TimeSpan.FromMilliseconds(10), t =>
        {
            if (++ticks == 20)
            {
                t.Cancel();
                loop.Stop();
            }
        });
        loop.Run();
        Assert.Equal(20, ticks);

        // 20 ticks of 10 ms: at least 190 ms (the first due at 0.3 ms), never faster.
        Assert.True(sw.Elapsed.TotalMilliseconds >= 190, $"20 ticks took {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(0, loop.ActiveTimerCount);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Timers_can_be_cancelled_and_changed_from_other_threads(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int cancelledRan = 0, changedRan = 0;
        LoopTimer cancelled = h.Loop.Schedule(TimeSpan.FromMilliseconds(100), _ => Interlocked.Increment(ref cancelledRan));
        LoopTimer changed = h.Loop.Schedule(TimeSpan.FromHours(1), _ => Interlocked.Increment(ref changedRan));
        cancelled.Cancel();
        Assert.False(cancelled.IsActive);
        changed.Change(TimeSpan.FromMilliseconds(20));
        LoopHarness.WaitUntil(() => Volatile.Read(ref changedRan) == 1, "the re-scheduled timer (1 h → 20 ms) fires");
        Thread.Sleep(200);
        Assert.Equal(0, Volatile.Read(ref cancelledRan));
        Assert.False(changed.IsActive);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_exception_in_a_callback_goes_to_the_handler_and_the_loop_goes_on(EventLoopBackend backend)
    {
        var errors = new ConcurrentQueue<Exception>();
        using var h = new LoopHarness(Backends.CreateLoop(backend, onError: errors.Enqueue));
        using var pair = SocketPair.Create();
        h.Loop.Post(() => throw new InvalidOperationException("from a post"));
        h.Loop.Schedule(TimeSpan.Zero, _ => throw new InvalidOperationException("from a timer"));
        int readable = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, _) =>
        {
            pair.Drain();
            if (Interlocked.Increment(ref readable) == 1)
            {
                throw new InvalidOperationException("from a readiness callback");
            }
        }));
        pair.Peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => errors.Count == 3, "three exceptions to reach the handler");
        pair.Peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref readable) >= 2, "the registration is still served after it threw");
        Assert.Equal(
            new[] { "from a post", "from a readiness callback", "from a timer" },
            errors.Select(e => e.Message).OrderBy(m => m, StringComparer.Ordinal).ToArray());
        Assert.True(h.Loop.IsRunning);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Without_a_handler_the_loop_stops_and_Run_rethrows(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        int after = 0;
        loop.Post(() => throw new InvalidOperationException("boom"));
        loop.Post(() => after++);
        var ex = Assert.Throws<InvalidOperationException>(() => loop.Run());
        Assert.Equal("boom", ex.Message);
        Assert.Equal(1, after); // the rest of the iteration still ran: nothing queued was dropped
        Assert.False(loop.IsRunning);

        // The loop is intact and can run again.
        loop.Post(() => loop.Stop());
        loop.Run();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Start_returns_a_task_that_faults_with_the_unhandled_exception(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        Task completion = loop.Start();
        loop.Post(() => throw new InvalidOperationException("on the loop thread"));
        var ex = Assert.Throws<AggregateException>(() => completion.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal("on the loop thread", ex.InnerException!.Message);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Stop_and_dispose_work_from_the_loop_and_from_other_threads(EventLoopBackend backend)
    {
        // Stop from another thread.
        var loop = Backends.CreateLoop(backend);
        Task run = loop.Start();
        Assert.True(loop.IsRunning);
        Assert.Throws<InvalidOperationException>(() => loop.Run());
        loop.Stop();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));

        // Re-entrant Run from a callback is refused; stop from the loop thread.
        Exception? reentrant = null;
        loop.Post(() =>
        {
            reentrant = Record.Exception(() => loop.Run());
            loop.Stop();
        });
        loop.Run();
        Assert.IsType<InvalidOperationException>(reentrant);

        // Dispose from another thread while running: waits for the loop to exit; posted work still runs.
        using var pair = SocketPair.Create();
        Registration reg = loop.Register(pair.Local, Interest.Readable, (_, _) => { });
        run = loop.Start();
        int postedRan = 0;
        loop.Post(() => Thread.Sleep(50));
        loop.Post(() => postedRan = 1);
        loop.Dispose();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, postedRan);
        Assert.True(reg.IsDisposed);
        Assert.True(loop.IsDisposed);

        // Dispose from inside a callback: Run returns and the loop is released.
        var loop2 = Backends.CreateLoop(backend);
        LoopTimer timer = loop2.ScheduleRepeating(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1), _ => { });
        loop2.Post(() => loop2.Dispose());
        loop2.Run();
        Assert.True(loop2.IsDisposed);
        Assert.False(timer.IsActive);
        Assert.Throws<ObjectDisposedException>(() => timer.Change(TimeSpan.Zero));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Await_in_loop_code_continues_on_the_loop_thread(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var threads = new ConcurrentQueue<bool>();
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Loop.Post(async () =>
        {
            threads.Enqueue(h.Loop.IsOnLoopThread);
            await Task.Delay(10);
            threads.Enqueue(h.Loop.IsOnLoopThread);
            await Task.Yield();
            threads.Enqueue(h.Loop.IsOnLoopThread);
            done.SetResult(true);
        });
        Assert.True(await done.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(new[] { true, true, true }, threads.ToArray());

        bool onLoop = await Task.Factory.StartNew(() => h.Loop.IsOnLoopThread, CancellationToken.None, TaskCreationOptions.None, h.Loop.TaskScheduler);
        Assert.True(onLoop);
    }
}
