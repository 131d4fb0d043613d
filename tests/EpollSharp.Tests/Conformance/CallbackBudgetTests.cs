using System.Runtime.CompilerServices;
using EpollSharp.Tests.Connections;

namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The callback budget (<see cref="EventLoopOptions.CallbackBudget"/>, <see cref="EventLoop.SlowCallback"/>): a callback
/// that holds the loop past it is reported while it still runs, from the watchdog thread, and again when it returns.
/// Every wait here is on an event (never on a guess of how long the machine takes), so a slow machine only makes them slower.
/// </summary>
public class CallbackBudgetTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private sealed class Reports
    {
        public ConcurrentQueue<SlowCallbackEventArgs> All { get; } = new();

        public ConcurrentQueue<int> Threads { get; } = new();

        public SemaphoreSlim Running { get; } = new(0);

        public SemaphoreSlim Ended { get; } = new(0);

        /// <summary>
        /// Collects the reports of <paramref name="loop"/> that <paramref name="only"/> accepts: on a loaded machine any
        /// callback (a posted check of the test, say) may be held past the budget by the scheduler and be reported too.
        /// </summary>
        public void Attach(EventLoop loop, Func<SlowCallbackEventArgs, bool>? only = null) => loop.SlowCallback += (sender, e) =>
        {
            Assert.Same(loop, sender);
            if (only is not null && !only(e))
            {
                return;
            }

            All.Enqueue(e);
            Threads.Enqueue(Environment.CurrentManagedThreadId);
            (e.HasEnded ? Ended : Running).Release();
        };
    }

    private static EventLoop CreateLoop(EventLoopBackend backend, TimeSpan budget, ConcurrentQueue<Exception>? errors = null)
    {
        Backends.SkipUnlessAvailable(backend);
        return new EventLoop(new EventLoopOptions { Backend = backend, CallbackBudget = budget, UnhandledExceptionHandler = errors is null ? null : errors.Enqueue });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_readiness_callback_past_the_budget_is_reported_while_it_runs_and_when_it_returns(EventLoopBackend backend)
    {
        using EventLoop loop = CreateLoop(backend, Budget);
        var reports = new Reports();
        reports.Attach(loop, e => e.Target == "the slow socket");
        using var harness = new LoopHarness(loop);
        using var pair = SocketPair.Create();
        int loopThread = harness.Invoke(() => Environment.CurrentManagedThreadId);
        bool seenWhileRunning = false;
        Registration registration = loop.Register(pair.Local, Interest.Readable, (r, _) =>
        {
            pair.Local.Receive(new byte[16]);

            // Holds the loop until the watchdog has reported this very callback: "while it still runs", shown, not timed.
            seenWhileRunning = reports.Running.Wait(Patience);
        });
        registration.Name = "the slow socket";
        pair.Peer.Send(new byte[] { 1 });

        Assert.True(reports.Ended.Wait(Patience), "the end of the slow callback was reported");
        Assert.True(seenWhileRunning, "the watchdog reported the callback while it ran");
        SlowCallbackEventArgs[] all = reports.All.ToArray();
        Assert.Equal(2, all.Length);
        SlowCallbackEventArgs running = all[0], ended = all[1];
        Assert.False(running.HasEnded);
        Assert.True(ended.HasEnded);
        foreach (SlowCallbackEventArgs e in all)
        {
            Assert.Same(loop, e.Loop);
            Assert.Equal(LoopCallbackKind.Readiness, e.Kind);
            Assert.Equal("the slow socket", e.Target);
            Assert.Equal(Budget, e.Budget);
            Assert.True(e.Elapsed >= Budget, $"elapsed {e.Elapsed} is at least the budget");
            Assert.Contains(nameof(A_readiness_callback_past_the_budget_is_reported_while_it_runs_and_when_it_returns), e.Method!.Name, StringComparison.Ordinal);
        }

        Assert.True(ended.Elapsed >= running.Elapsed, "the end report carries the whole duration");
        int[] threads = reports.Threads.ToArray();
        Assert.NotEqual(loopThread, threads[0]);
        Assert.Equal(loopThread, threads[1]);
        Assert.Contains("the slow socket", ended.ToString(), StringComparison.Ordinal);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Posted_work_that_spins_for_ever_is_reported_and_the_test_then_lets_it_go(EventLoopBackend backend)
    {
        using EventLoop loop = CreateLoop(backend, Budget);
        var reports = new Reports();
        reports.Attach(loop, e => e.Kind == LoopCallbackKind.PostedWork && e.Target.StartsWith("System.Runtime.CompilerServices.StrongBox", StringComparison.Ordinal));
        using var harness = new LoopHarness(loop);
        var box = new StrongBox<int>(0);
        loop.Post(static state =>
        {
            // Never returns on its own: a CPU-bound handler gone wrong.
            var flag = (StrongBox<int>)state!;
            while (Volatile.Read(ref flag.Value) == 0)
            {
            }
        }, box);

        Assert.True(reports.Running.Wait(Patience), "the watchdog reported the spinning work");
        SlowCallbackEventArgs running = reports.All.Single();
        Assert.Equal(LoopCallbackKind.PostedWork, running.Kind);
        Assert.False(running.HasEnded);
        Assert.StartsWith("System.Runtime.CompilerServices.StrongBox", running.Target, StringComparison.Ordinal);
        Assert.Contains(nameof(Posted_work_that_spins_for_ever_is_reported_and_the_test_then_lets_it_go), running.Method!.Name, StringComparison.Ordinal);

        // Reported once per callback, however long it runs.
        Thread.Sleep(300);
        Assert.Single(reports.All);

        Volatile.Write(ref box.Value, 1);
        Assert.True(reports.Ended.Wait(Patience), "the end was reported once the work was let go");
        Assert.True(reports.All.Last().Elapsed >= TimeSpan.FromMilliseconds(300));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_slow_timer_is_reported_with_its_state(EventLoopBackend backend)
    {
        using EventLoop loop = CreateLoop(backend, Budget);
        var reports = new Reports();
        reports.Attach(loop, e => e.Kind == LoopCallbackKind.Timer);
        using var harness = new LoopHarness(loop);
        loop.Schedule(TimeSpan.FromMilliseconds(1), _ => reports.Running.Wait(Patience), "the nightly job");
        Assert.True(reports.Ended.Wait(Patience), "the slow timer's end was reported");
        Assert.All(reports.All, e => Assert.Equal((LoopCallbackKind.Timer, "the nightly job"), (e.Kind, e.Target)));
        Assert.Equal(2, reports.All.Count);
    }

    private sealed class SlowHandler : ConnectionHandler
    {
        private readonly SemaphoreSlim _reported;

        public SlowHandler(SemaphoreSlim reported) => _reported = reported;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            _reported.Wait(Patience);
            connection.Write(data);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_slow_connection_handler_is_named_by_its_connection_and_handler_type(EventLoopBackend backend)
    {
        using EventLoop loop = CreateLoop(backend, Budget);
        var reports = new Reports();
        reports.Attach(loop, e => e.Target.StartsWith("connection ", StringComparison.Ordinal));
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new SlowHandler(reports.Running));
        using Socket client = EchoServer.ConnectTo(listener.LocalEndPoint);
        client.Send(new byte[] { 7 });
        Assert.Equal(new byte[] { 7 }, client.ReceiveExactly(1));
        Assert.True(reports.Ended.Wait(Patience));
        SlowCallbackEventArgs ended = reports.All.Last();
        Assert.Equal(LoopCallbackKind.Readiness, ended.Kind);
        Assert.StartsWith("connection ", ended.Target, StringComparison.Ordinal);
        Assert.Contains("from " + client.LocalEndPoint + " (accepted), handler SlowHandler", ended.Target, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Callbacks_within_the_budget_are_not_reported(EventLoopBackend backend)
    {
        // A budget far above what these callbacks take, even on a loaded machine.
        using EventLoop loop = CreateLoop(backend, TimeSpan.FromSeconds(5));
        var reports = new Reports();
        reports.Attach(loop);
        using var harness = new LoopHarness(loop);
        for (int i = 0; i < 1000; i++)
        {
            loop.Post(() => { });
        }

        harness.Invoke(() => 0);
        loop.Schedule(TimeSpan.FromMilliseconds(1), _ => { });
        Thread.Sleep(100);
        harness.Invoke(() => 0);
        Assert.Empty(reports.All);
        Assert.Equal(TimeSpan.FromSeconds(5), loop.CallbackBudget);
    }

    [Fact]
    public void With_the_budget_off_by_default_nothing_is_reported()
    {
        using var loop = new EventLoop();
        var reports = new Reports();
        reports.Attach(loop);
        using var harness = new LoopHarness(loop);
        Assert.Equal(Timeout.InfiniteTimeSpan, loop.CallbackBudget);
        harness.Invoke(() =>
        {
            Thread.Sleep(150);
            return 0;
        });
        Thread.Sleep(100);
        Assert.Empty(reports.All);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    [InlineData(3_600_001)]
    public void A_budget_out_of_range_is_refused(int milliseconds)
    {
        var options = new EventLoopOptions();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => options.CallbackBudget = TimeSpan.FromMilliseconds(milliseconds));
        Assert.Equal("value", e.ParamName);
        Assert.Contains("CallbackBudget", e.Message, StringComparison.Ordinal);
        options.CallbackBudget = TimeSpan.FromMilliseconds(1);
        options.CallbackBudget = Timeout.InfiniteTimeSpan;
    }

    [SkippableFact]
    public void A_report_handler_that_throws_is_handled_as_a_callback_exception_on_the_loop()
    {
        var errors = new ConcurrentQueue<Exception>();
        using EventLoop loop = CreateLoop(EventLoopBackend.Epoll, Budget, errors);
        loop.SlowCallback += (_, e) => throw new InvalidOperationException(e.HasEnded ? "ended" : "running");
        using var harness = new LoopHarness(loop);
        loop.Post(() =>
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromMilliseconds(400))
            {
            }
        });
        LoopHarness.WaitUntil(() => errors.Count == 2, "both report handler exceptions reached the loop's handler");
        Assert.Equal(new[] { "ended", "running" }, errors.Select(e => e.Message).OrderBy(m => m, StringComparer.Ordinal));
        Assert.False(harness.Completion.IsCompleted, "the loop runs on");
    }

    [SkippableFact]
    public void The_watchdog_thread_follows_the_loops_with_a_budget()
    {
        var loop = CreateLoop(EventLoopBackend.Epoll, TimeSpan.FromMilliseconds(8));
        try
        {
            Assert.True(CallbackWatchdog.Interval <= TimeSpan.FromMilliseconds(2), $"a quarter of the smallest budget, {CallbackWatchdog.Interval}");
        }
        finally
        {
            loop.Dispose();
        }
    }
}
