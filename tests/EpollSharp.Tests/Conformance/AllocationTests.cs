namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>The loop's steady state allocates nothing: dispatch, posting with state, re-arming timers (three windows of 100,000 each, measured on the loop thread).</summary>
public class AllocationTests
{
    private const int Warmup = 2_000;
    private const int Measured = 100_000;

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Dispatching_readiness_allocates_nothing(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var loop = Backends.CreateLoop(backend);
        pair.Peer.Send(new byte[] { 1 }); // never drained: level-triggered, one event per iteration
        var probe = new Probe(loop);
        loop.Register(pair.Local, Interest.Readable, static (r, _) => ((Probe)r.State!).Tick(), probe);
        loop.Run();
        probe.AssertAllocatesNothing();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Dispatching_readiness_with_a_callback_budget_allocates_nothing(EventLoopBackend backend)
    {
        // The budget's marks around every callback, with the watchdog thread looking, cost no allocation either.
        Backends.SkipUnlessAvailable(backend);
        using var pair = SocketPair.Create();
        using var loop = new EventLoop(new EventLoopOptions { Backend = backend, CallbackBudget = TimeSpan.FromSeconds(10) });
        pair.Peer.Send(new byte[] { 1 });
        var probe = new Probe(loop);
        loop.Register(pair.Local, Interest.Readable, static (r, _) => ((Probe)r.State!).Tick(), probe);
        loop.Run();
        probe.AssertAllocatesNothing();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Posting_with_state_allocates_nothing(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        var probe = new Probe(loop);
        probe.Repost = static state =>
        {
            var p = (Probe)state!;
            if (p.Tick())
            {
                p.Loop.Post(p.Repost!, p);
            }
        };
        loop.Post(probe.Repost, probe);
        loop.Run();
        probe.AssertAllocatesNothing();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Re_arming_timers_allocates_nothing(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        var probe = new Probe(loop);
        loop.Schedule(TimeSpan.Zero, static t =>
        {
            if (((Probe)t.State!).Tick())
            {
                t.Change(TimeSpan.Zero);
            }
        }, probe);
        loop.Run();
        probe.AssertAllocatesNothing();
    }

    /// <summary>
    /// Counts ticks on the loop thread; after <see cref="Warmup"/> ticks it measures the bytes allocated in each of
    /// <see cref="Windows"/> windows of <see cref="Measured"/> ticks. An allocation per operation shows in every window; the
    /// runtime's own one-off work on the thread (a type loaded on a path first taken late, under load) shows in one at most.
    /// </summary>
    private sealed class Probe
    {
        private const int Windows = 3;
        private readonly long[] _windows = new long[Windows];
        private int _ticks;
        private long _start;

        public Probe(EventLoop loop) => Loop = loop;

        public EventLoop Loop { get; }

        public Action<object?>? Repost { get; set; }

        /// <summary>Returns false once the measurement is over (and stops the loop).</summary>
        public bool Tick()
        {
            _ticks++;
            if (_ticks < Warmup || (_ticks - Warmup) % Measured != 0)
            {
                return true;
            }

            long now = GC.GetAllocatedBytesForCurrentThread();
            int window = (_ticks - Warmup) / Measured;
            if (window > 0)
            {
                _windows[window - 1] = now - _start;
            }

            _start = now;
            if (window == Windows)
            {
                Loop.Stop();
                return false;
            }

            return true;
        }

        /// <summary>At least two of the three windows allocated nothing (so no operation allocates).</summary>
        public void AssertAllocatesNothing()
        {
            Assert.True(_ticks == Warmup + (Windows * Measured), $"the measurement ran ({_ticks} ticks)");
            int zero = 0;
            foreach (long bytes in _windows)
            {
                zero += bytes == 0 ? 1 : 0;
            }

            Assert.True(zero >= Windows - 1, "bytes allocated per window of " + Measured + " operations: " + string.Join(", ", _windows));
        }
    }
}
