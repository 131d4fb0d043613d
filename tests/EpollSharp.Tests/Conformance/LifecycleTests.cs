namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Run, Stop and Dispose in every order a user may call them: posted work is never lost, a continuation that outlives
/// the loop never crashes the process, and a hang-up is reported once.
/// </summary>
public class LifecycleTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Stop_before_Run_makes_Run_do_one_iteration_that_runs_posted_work(EventLoopBackend backend)
    {
        using EventLoop loop = Backends.CreateLoop(backend);
        int ran = 0;
        loop.Post(() => ran++);
        loop.Stop();
        var run = Task.Run(loop.Run);
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)), "Run returns after one iteration");
        Assert.Equal(1, ran);

        // The stop was consumed: the next Run runs until it is stopped again.
        int second = 0;
        loop.Post(() => second++);
        var again = Task.Run(loop.Run);
        LoopHarness.WaitUntil(() => Volatile.Read(ref second) == 1, "the second run runs posted work");
        Assert.False(again.IsCompleted);
        loop.Stop();
        Assert.True(again.Wait(TimeSpan.FromSeconds(10)));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Work_posted_to_a_stopped_loop_runs_on_the_loop_when_it_is_disposed(EventLoopBackend backend)
    {
        EventLoop loop = Backends.CreateLoop(backend);
        Task run = loop.Start();
        loop.Stop();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));

        bool onLoopThread = false;
        int ran = 0;
        loop.Post(() =>
        {
            onLoopThread = loop.IsOnLoopThread;
            ran++;
        });
        loop.Dispose();
        Assert.Equal(1, ran);
        Assert.True(onLoopThread, "the work runs as the loop's own work (IsOnLoopThread), on the disposing thread");
        Assert.Throws<ObjectDisposedException>(() => loop.Post(() => { }));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_await_that_completes_after_the_loop_is_disposed_continues_on_the_thread_pool(EventLoopBackend backend)
    {
        EventLoop loop = Backends.CreateLoop(backend);
        Task run = loop.Start();
        var continued = new TaskCompletionSource<(bool OnLoop, bool PoolThread, SynchronizationContext? Context)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new ManualResetEventSlim();
        loop.Post(async () =>
        {
            started.Set();
            await Task.Delay(300);
            continued.SetResult((loop.IsOnLoopThread, Thread.CurrentThread.IsThreadPoolThread, SynchronizationContext.Current));
        });
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)));
        Thread.Sleep(50);
        loop.Dispose();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));

        // Before the fix the continuation's post threw ObjectDisposedException on a pool thread and the process died.
        Assert.True(continued.Task.Wait(TimeSpan.FromSeconds(10)), "the continuation runs");
        var (onLoop, poolThread, context) = continued.Task.Result;
        Assert.False(onLoop);
        Assert.True(poolThread);
        Assert.NotSame(loop.SynchronizationContext, context);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_task_queued_to_the_loop_scheduler_after_dispose_faults(EventLoopBackend backend)
    {
        EventLoop loop = Backends.CreateLoop(backend);
        loop.Dispose();
        Task task = Task.CompletedTask.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, loop.TaskScheduler);
        var error = Assert.Throws<AggregateException>(() => task.Wait(TimeSpan.FromSeconds(10)));
        Assert.IsType<TaskSchedulerException>(error.InnerException);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_reset_with_empty_interest_is_reported_exactly_once(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int calls = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.None, (r, readiness) => Interlocked.Increment(ref calls)));
        pair.ResetPeer();
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 1, "a callback for the reset");
        Thread.Sleep(300);
        h.Settle();
        Assert.Equal(1, Volatile.Read(ref calls));
    }

    // A full hang-up (both directions shut) with empty interest is reported exactly once too: see
    // MisuseTests.A_socket_shut_down_both_ways_reports_a_hang_up_once (kqueue has no such report, documented there).
}
