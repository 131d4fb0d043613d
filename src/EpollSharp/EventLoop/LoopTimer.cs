using System;
using System.Threading;

namespace EpollSharp;

/// <summary>
/// A one-shot or repeating timer on an <see cref="EventLoop"/>. Its callback runs on the loop thread.
/// Created by <see cref="EventLoop.Schedule(TimeSpan, Action{LoopTimer}, object?)"/> or
/// <see cref="EventLoop.ScheduleRepeating(TimeSpan, TimeSpan, Action{LoopTimer}, object?)"/>.
/// </summary>
/// <remarks>
/// <para>Timers fire in due order (ties in the order they were scheduled), never early: the loop's wait
/// timeout is rounded up to the next millisecond. A repeating timer is due every period after its first
/// due time; if the loop falls behind by more than a period, the missed ticks are skipped rather than run
/// in a burst.</para>
/// <para>Every member may be called from any thread. <see cref="Cancel"/> on the loop thread guarantees the
/// callback does not run again; from another thread, one callback that the loop had already begun to start (or is
/// running) may still run, after which none does.</para>
/// </remarks>
public sealed class LoopTimer : IDisposable
{
    private readonly Action<LoopTimer> _callback;

    internal LoopTimer(EventLoop loop, Action<LoopTimer> callback, object? state)
    {
        Loop = loop;
        _callback = callback;
        State = state;
        HeapIndex = -1;
    }

    /// <summary>The loop the timer runs on.</summary>
    public EventLoop Loop { get; }

    /// <summary>Your object, for the callback. May be changed at any time.</summary>
    public object? State { get; set; }

    /// <summary>Whether the timer is scheduled to fire.</summary>
    public bool IsActive => Volatile.Read(ref _active);

    /// <summary>The period of a repeating timer; <see cref="TimeSpan.Zero"/> for a one-shot timer.</summary>
    public TimeSpan Period => EpollSharp.Native.Timeouts.FromStopwatchTicks(PeriodStopwatchTicks);

    internal bool _active;

    /// <summary>Position in the loop's timer heap; -1 when not in it.</summary>
    internal int HeapIndex { get; set; }

    /// <summary>Due time as a <see cref="System.Diagnostics.Stopwatch"/> timestamp.</summary>
    internal long Due { get; set; }

    /// <summary>Order of scheduling, to break ties and to keep timers scheduled during a timer pass for the next pass.</summary>
    internal long Sequence { get; set; }

    internal long PeriodStopwatchTicks { get; set; }

    /// <summary>Re-schedules the timer as a one-shot timer due after <paramref name="dueTime"/>. Allocates nothing.</summary>
    /// <param name="dueTime">Delay from now; zero or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dueTime"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public void Change(TimeSpan dueTime) => Loop.ChangeTimer(this, dueTime, TimeSpan.Zero, nameof(dueTime), null);

    /// <summary>Re-schedules the timer: due after <paramref name="dueTime"/>, then every <paramref name="period"/> (zero for one-shot). Allocates nothing.</summary>
    /// <param name="dueTime">Delay from now; zero or more.</param>
    /// <param name="period">Interval between ticks; zero for a one-shot timer, otherwise positive.</param>
    /// <exception cref="ArgumentOutOfRangeException">A time is negative.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public void Change(TimeSpan dueTime, TimeSpan period) => Loop.ChangeTimer(this, dueTime, period, nameof(dueTime), nameof(period));

    /// <summary>Stops the timer. Idempotent; <see cref="Change(TimeSpan)"/> may start it again.</summary>
    public void Cancel() => Loop.CancelTimer(this);

    /// <summary>Same as <see cref="Cancel"/>.</summary>
    public void Dispose() => Cancel();

    internal void Invoke() => _callback(this);

    /// <summary>The callback, for <see cref="EventLoop.SlowCallback"/> reports.</summary>
    internal Action<LoopTimer> Callback => _callback;
}
