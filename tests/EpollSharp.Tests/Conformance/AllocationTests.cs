using System;
using EpollSharp.Tests.Util;

namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>The loop's steady state allocates nothing: dispatch, posting with state, re-arming timers (100,000 each, measured on the loop thread).</summary>
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
        Assert.Equal(0, probe.AllocatedBytes);
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
        Assert.Equal(0, probe.AllocatedBytes);
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
        Assert.Equal(0, probe.AllocatedBytes);
    }

    /// <summary>Counts ticks on the loop thread; measures allocation between tick <see cref="Warmup"/> and <see cref="Warmup"/> + <see cref="Measured"/>.</summary>
    private sealed class Probe
    {
        private int _ticks;
        private long _start;

        public Probe(EventLoop loop) => Loop = loop;

        public EventLoop Loop { get; }

        public Action<object?>? Repost { get; set; }

        public long AllocatedBytes { get; private set; } = -1;

        /// <summary>Returns false once the measurement is over (and stops the loop).</summary>
        public bool Tick()
        {
            _ticks++;
            if (_ticks == Warmup)
            {
                _start = GC.GetAllocatedBytesForCurrentThread();
            }
            else if (_ticks == Warmup + Measured)
            {
                AllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - _start;
                Loop.Stop();
                return false;
            }

            return _ticks < Warmup + Measured;
        }
    }
}
