using System;
using System.Diagnostics;
using EpollSharp.Native;

namespace EpollSharp;

public sealed partial class EventLoop
{
    private readonly object _timerLock = new();
    private LoopTimer[] _heap = new LoopTimer[16];
    private int _heapCount;
    private long _timerSequence;

    /// <summary>How many timers are scheduled.</summary>
    public int ActiveTimerCount
    {
        get
        {
            lock (_timerLock)
            {
                return _heapCount;
            }
        }
    }

    /// <summary>Schedules <paramref name="callback"/> to run once on the loop thread after <paramref name="dueTime"/>. Safe from any thread. O(log n).</summary>
    /// <param name="dueTime">Delay from now; zero or more. Rounded up to whole milliseconds by the wait, never fired early.</param>
    /// <param name="callback">Called with the timer; use <see cref="LoopTimer.State"/> for your object.</param>
    /// <param name="state">Your object.</param>
    /// <returns>The timer: cancel it, or re-schedule it with <see cref="LoopTimer.Change(TimeSpan)"/> without allocating.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="callback"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dueTime"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public LoopTimer Schedule(TimeSpan dueTime, Action<LoopTimer> callback, object? state = null)
    {
        if (callback is null)
        {
            throw new ArgumentNullException(nameof(callback));
        }

        var timer = new LoopTimer(this, callback, state);
        ChangeTimer(timer, dueTime, TimeSpan.Zero, nameof(dueTime), null);
        return timer;
    }

    /// <summary>Schedules <paramref name="callback"/> to run on the loop thread after <paramref name="dueTime"/>, then every <paramref name="period"/>. Safe from any thread.</summary>
    /// <param name="dueTime">Delay to the first tick; zero or more.</param>
    /// <param name="period">Interval between ticks; positive.</param>
    /// <param name="callback">Called with the timer on each tick.</param>
    /// <param name="state">Your object.</param>
    /// <returns>The timer.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="callback"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dueTime"/> is negative or <paramref name="period"/> is not positive.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public LoopTimer ScheduleRepeating(TimeSpan dueTime, TimeSpan period, Action<LoopTimer> callback, object? state = null)
    {
        if (callback is null)
        {
            throw new ArgumentNullException(nameof(callback));
        }

        if (period <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(period), period, "The period of a repeating timer must be positive.");
        }

        var timer = new LoopTimer(this, callback, state);
        ChangeTimer(timer, dueTime, period, nameof(dueTime), nameof(period));
        return timer;
    }

    internal void ChangeTimer(LoopTimer timer, TimeSpan dueTime, TimeSpan period, string dueName, string? periodName)
    {
        if (dueTime < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(dueName, dueTime, "The due time cannot be negative.");
        }

        if (period < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(periodName ?? "period", period, "The period cannot be negative.");
        }

        long dueTicks = ToStopwatchTicks(dueTime, dueName);
        long periodTicks = ToStopwatchTicks(period, periodName ?? "period");
        bool wake;
        lock (_timerLock)
        {
            ThrowIfDisposed();
            long due = Stopwatch.GetTimestamp() + dueTicks;
            timer.PeriodStopwatchTicks = periodTicks;
            timer.Due = due;
            timer.Sequence = ++_timerSequence;
            timer._active = true;
            if (timer.HeapIndex >= 0)
            {
                SiftUp(timer.HeapIndex);
                SiftDown(timer.HeapIndex);
            }
            else
            {
                Push(timer);
            }

            wake = _heap[0] == timer;
        }

        if (wake && !IsOnLoopThread)
        {
            RequestWake();
        }
    }

    internal void CancelTimer(LoopTimer timer)
    {
        lock (_timerLock)
        {
            timer._active = false;
            if (timer.HeapIndex >= 0)
            {
                RemoveAt(timer.HeapIndex);
            }
        }
    }

    private int TimeoutUntilNextTimer()
    {
        long due;
        lock (_timerLock)
        {
            if (_heapCount == 0)
            {
                return -1;
            }

            due = _heap[0].Due;
        }

        // Rounded up (a timer due in 0.3 ms waits 1 ms, never 0) and capped: the rule is in Timeouts.
        return Timeouts.ToWaitMilliseconds(due - Stopwatch.GetTimestamp());
    }

    private void RunDueTimers()
    {
        long now = Stopwatch.GetTimestamp();
        long lastSequence;
        lock (_timerLock)
        {
            lastSequence = _timerSequence;
        }

        while (true)
        {
            LoopTimer timer;
            lock (_timerLock)
            {
                if (_heapCount == 0)
                {
                    return;
                }

                timer = _heap[0];
                if (timer.Due > now || timer.Sequence > lastSequence)
                {
                    // Not due yet, or scheduled during this pass (it runs next iteration, so a timer that
                    // re-schedules itself with no delay cannot hold the loop here).
                    return;
                }

                if (timer.PeriodStopwatchTicks > 0)
                {
                    long next = timer.Due + timer.PeriodStopwatchTicks;
                    if (next <= now)
                    {
                        next = now + timer.PeriodStopwatchTicks;
                    }

                    timer.Due = next;
                    timer.Sequence = ++_timerSequence;
                    SiftDown(0);
                }
                else
                {
                    timer._active = false;
                    RemoveAt(0);
                }
            }

            BeginCallback(LoopCallbackKind.Timer, timer, null);
            try
            {
                timer.Invoke();
            }
            catch (Exception ex)
            {
                OnCallbackException(ex);
            }
            finally
            {
                EndCallback();
            }
        }
    }

    private void CancelAllTimers()
    {
        lock (_timerLock)
        {
            for (int i = 0; i < _heapCount; i++)
            {
                _heap[i]._active = false;
                _heap[i].HeapIndex = -1;
                _heap[i] = null!;
            }

            _heapCount = 0;
        }
    }

    /// <summary>A non-negative delay in <see cref="Stopwatch"/> ticks, rounded up (see <see cref="Timeouts"/>); too long a delay is refused.</summary>
    private static long ToStopwatchTicks(TimeSpan span, string paramName)
    {
        if (!Timeouts.TryToStopwatchTicks(span, out long ticks))
        {
            throw new ArgumentOutOfRangeException(paramName, span, "The time is too long.");
        }

        return ticks;
    }

    private static bool Earlier(LoopTimer a, LoopTimer b) => a.Due < b.Due || (a.Due == b.Due && a.Sequence < b.Sequence);

    private void Push(LoopTimer timer)
    {
        if (_heapCount == _heap.Length)
        {
            Array.Resize(ref _heap, _heap.Length * 2);
        }

        _heap[_heapCount] = timer;
        timer.HeapIndex = _heapCount;
        _heapCount++;
        SiftUp(timer.HeapIndex);
    }

    private void RemoveAt(int index)
    {
        LoopTimer removed = _heap[index];
        _heapCount--;
        if (index != _heapCount)
        {
            LoopTimer last = _heap[_heapCount];
            _heap[index] = last;
            last.HeapIndex = index;
            _heap[_heapCount] = null!;
            SiftUp(index);
            SiftDown(last.HeapIndex);
        }
        else
        {
            _heap[_heapCount] = null!;
        }

        removed.HeapIndex = -1;
    }

    private void SiftUp(int index)
    {
        LoopTimer timer = _heap[index];
        while (index > 0)
        {
            int parent = (index - 1) / 2;
            LoopTimer p = _heap[parent];
            if (!Earlier(timer, p))
            {
                break;
            }

            _heap[index] = p;
            p.HeapIndex = index;
            index = parent;
        }

        _heap[index] = timer;
        timer.HeapIndex = index;
    }

    private void SiftDown(int index)
    {
        LoopTimer timer = _heap[index];
        while (true)
        {
            int child = (2 * index) + 1;
            if (child >= _heapCount)
            {
                break;
            }

            if (child + 1 < _heapCount && Earlier(_heap[child + 1], _heap[child]))
            {
                child++;
            }

            if (!Earlier(_heap[child], timer))
            {
                break;
            }

            _heap[index] = _heap[child];
            _heap[index].HeapIndex = index;
            index = child;
        }

        _heap[index] = timer;
        timer.HeapIndex = index;
    }
}
