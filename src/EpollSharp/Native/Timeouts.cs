using System;
using System.Diagnostics;

namespace EpollSharp.Native;

/// <summary>Timeout conversions shared by every wait.</summary>
internal static class Timeouts
{
    /// <summary>
    /// Converts a <see cref="TimeSpan"/> to whole milliseconds for a native wait, rounding up so that a
    /// sub-millisecond timeout never becomes a zero-timeout busy loop. Infinite becomes -1.
    /// </summary>
    internal static int ToMilliseconds(TimeSpan timeout, string paramName)
    {
        if (timeout == System.Threading.Timeout.InfiniteTimeSpan)
        {
            return -1;
        }

        if (timeout < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(paramName, timeout, "The timeout must be non-negative or Timeout.InfiniteTimeSpan.");
        }

        long ticks = timeout.Ticks;
        long ms = (ticks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
        if (ms > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(paramName, timeout, "The timeout must be at most int.MaxValue milliseconds.");
        }

        return (int)ms;
    }

    /// <summary>Milliseconds left of <paramref name="timeoutMilliseconds"/> since <paramref name="startTimestamp"/>, rounded up, never negative.</summary>
    internal static int Remaining(long startTimestamp, int timeoutMilliseconds)
    {
        long elapsedTicks = Stopwatch.GetTimestamp() - startTimestamp;
        double elapsedMs = elapsedTicks * 1000.0 / Stopwatch.Frequency;
        double left = timeoutMilliseconds - elapsedMs;
        return left <= 0 ? 0 : (int)Math.Ceiling(left);
    }
}
