using System;
using System.Diagnostics;
using System.Threading;

namespace EpollSharp;

/// <summary>
/// One background thread for the process that looks at the loops with a callback budget, a few times per budget, and has
/// each report a callback that has run past it (<see cref="EventLoop.CheckCallback"/>). It starts with the first such loop
/// and ends when the last one is disposed.
/// </summary>
internal static class CallbackWatchdog
{
    private static readonly object s_lock = new();
    private static readonly Native.CopyOnWriteList<EventLoop> s_loops = new();
    private static Thread? s_thread;

    /// <summary>How often the watchdog looks: a quarter of the smallest budget, from 1 ms to 250 ms.</summary>
    internal static TimeSpan Interval
    {
        get
        {
            lock (s_lock)
            {
                return IntervalLocked();
            }
        }
    }

    internal static void Add(EventLoop loop)
    {
        lock (s_lock)
        {
            s_loops.Add(loop);
            if (s_thread is null)
            {
                s_thread = new Thread(Run) { IsBackground = true, Name = "EpollSharp watchdog" };
                s_thread.Start();
            }

            Monitor.PulseAll(s_lock);
        }
    }

    internal static void Remove(EventLoop loop)
    {
        lock (s_lock)
        {
            if (s_loops.Remove(loop))
            {
                Monitor.PulseAll(s_lock);
            }
        }
    }

    private static TimeSpan IntervalLocked()
    {
        long smallest = long.MaxValue;
        foreach (EventLoop loop in s_loops.Snapshot)
        {
            smallest = Math.Min(smallest, loop.BudgetTicks);
        }

        if (smallest == long.MaxValue)
        {
            return TimeSpan.FromMilliseconds(250);
        }

        double milliseconds = smallest * 1000.0 / Stopwatch.Frequency / 4;
        return TimeSpan.FromMilliseconds(Math.Min(250, Math.Max(1, milliseconds)));
    }

    private static void Run()
    {
        while (true)
        {
            EventLoop[] loops;
            TimeSpan interval;
            lock (s_lock)
            {
                loops = s_loops.Snapshot;
                if (loops.Length == 0)
                {
                    s_thread = null;
                    return;
                }

                interval = IntervalLocked();
            }

            long now = Stopwatch.GetTimestamp();
            foreach (EventLoop loop in loops)
            {
                loop.CheckCallback(now);
            }

            lock (s_lock)
            {
                Monitor.Wait(s_lock, interval);
            }
        }
    }
}
