using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;

namespace EpollSharp;

// The loop's counts for the EpollSharp meter (LoopMetrics): plain fields written by the loop thread (Interlocked where
// other threads write), read by a metrics listener when it collects.
public sealed partial class EventLoop
{
    private static int s_nextId;

    private long _iterations;
    private long _eventsDispatched;
    private long _staleEvents;
    private long _wakeupsSent;
    private long _wakeupsCoalesced;
    private long _busyTicks;
    private long _waitTicks;

    /// <summary>A number unique to this loop in the process, for the metrics' <c>epollsharp.loop.id</c> tag and for logs.</summary>
    internal int Id { get; } = Interlocked.Increment(ref s_nextId);

    /// <summary>The id tag, made once (a tag made per measurement would box the number each time).</summary>
    internal KeyValuePair<string, object?> LoopIdTag { get; private set; }

    /// <summary>The backend tag, made once.</summary>
    internal KeyValuePair<string, object?> BackendTag { get; private set; }

    internal long MetricIterations => Volatile.Read(ref _iterations);

    internal long MetricEventsDispatched => Volatile.Read(ref _eventsDispatched);

    internal long MetricStaleEvents => Volatile.Read(ref _staleEvents);

    internal long MetricWakeupsSent => Volatile.Read(ref _wakeupsSent);

    internal long MetricWakeupsCoalesced => Volatile.Read(ref _wakeupsCoalesced);

    internal double BusySeconds => Volatile.Read(ref _busyTicks) / (double)Stopwatch.Frequency;

    internal double WaitSeconds => Volatile.Read(ref _waitTicks) / (double)Stopwatch.Frequency;

    private void InitializeMetrics()
    {
        LoopIdTag = new KeyValuePair<string, object?>(LoopMetrics.LoopTag, Id);
        BackendTag = new KeyValuePair<string, object?>(LoopMetrics.BackendTag, LoopMetrics.BackendName(Backend));
        LoopMetrics.Add(this);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RecordWait(int events)
    {
        Volatile.Write(ref _iterations, _iterations + 1);
        if (LoopMetrics.EventsPerWait.Enabled)
        {
            LoopMetrics.EventsPerWait.Record(events, LoopIdTag, BackendTag);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RecordCallbackDuration(long ticks)
    {
        if (LoopMetrics.CallbackDuration.Enabled)
        {
            LoopMetrics.CallbackDuration.Record(ticks / (double)Stopwatch.Frequency, LoopIdTag, BackendTag);
        }
    }
}
