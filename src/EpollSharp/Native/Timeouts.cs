using System;
using System.Diagnostics;

namespace EpollSharp.Native;

/// <summary>
/// Every conversion of time in the library: a <see cref="TimeSpan"/> or a <see cref="Stopwatch"/> tick count to the
/// whole milliseconds of a native wait, and between <see cref="TimeSpan"/> ticks and <see cref="Stopwatch"/> ticks.
/// </summary>
/// <remarks>
/// <para><b>The rule, stated once: a wait rounds up, never early.</b> Every conversion here rounds up to the next whole
/// unit of its result. A timer due in 0.3 ms waits 1 ms, never 0 (a zero timeout polls, and a loop that polls until the
/// timer is due spins a core) and never fires before it is due; a deadline converted to stopwatch ticks and back is
/// never earlier than the one given. The arithmetic is integer (whole seconds first, then the remainder), so the
/// result is the exact ceiling and cannot overflow on the way.</para>
/// <para><b>Caps.</b> A native wait takes at most <see cref="int.MaxValue"/> milliseconds (about 24.8 days): a longer
/// remaining time waits that long, and the loop computes the timeout again when it wakes. A span converted to stopwatch
/// ticks is at most <see cref="MaxStopwatchTicks"/>, so that adding it to a timestamp cannot overflow.</para>
/// </remarks>
internal static class Timeouts
{
    /// <summary>The longest span, in <see cref="Stopwatch"/> ticks, that is converted: a quarter of the range of a timestamp, so that <c>now + span</c> cannot overflow.</summary>
    internal const long MaxStopwatchTicks = long.MaxValue / 4;

    /// <summary>
    /// Converts a <see cref="TimeSpan"/> given by a caller to whole milliseconds for a native wait, rounding up.
    /// Infinite becomes -1.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative (other than infinite) or longer than <see cref="int.MaxValue"/> milliseconds.</exception>
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

        long ms = CeilingDivide(timeout.Ticks, TimeSpan.TicksPerMillisecond);
        if (ms > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(paramName, timeout, "The timeout must be at most int.MaxValue milliseconds.");
        }

        return (int)ms;
    }

    /// <summary>
    /// The milliseconds to wait for <paramref name="stopwatchTicks"/> (a time left until a deadline), rounded up and
    /// capped at <see cref="int.MaxValue"/>; 0 when nothing is left.
    /// </summary>
    internal static int ToWaitMilliseconds(long stopwatchTicks)
    {
        if (stopwatchTicks <= 0)
        {
            return 0;
        }

        long frequency = Stopwatch.Frequency;
        long seconds = stopwatchTicks / frequency;
        if (seconds >= int.MaxValue / 1000)
        {
            return int.MaxValue;
        }

        long ms = (seconds * 1000) + CeilingDivide((stopwatchTicks % frequency) * 1000, frequency);
        return ms > int.MaxValue ? int.MaxValue : (int)ms;
    }

    /// <summary>
    /// Milliseconds left of <paramref name="timeoutMilliseconds"/> since <paramref name="startTimestamp"/> (a
    /// <see cref="Stopwatch.GetTimestamp"/>), rounded up, never negative: the timeout of a wait retried after EINTR.
    /// </summary>
    internal static int Remaining(long startTimestamp, int timeoutMilliseconds)
    {
        long elapsed = Stopwatch.GetTimestamp() - startTimestamp;
        return ToWaitMilliseconds(MillisecondsToStopwatchTicks(timeoutMilliseconds) - elapsed);
    }

    /// <summary>
    /// Converts a non-negative <paramref name="span"/> to <see cref="Stopwatch"/> ticks, rounded up; false when it is
    /// longer than <see cref="MaxStopwatchTicks"/>.
    /// </summary>
    internal static bool TryToStopwatchTicks(TimeSpan span, out long stopwatchTicks)
    {
        long frequency = Stopwatch.Frequency;
        long seconds = span.Ticks / TimeSpan.TicksPerSecond;
        if (seconds > MaxStopwatchTicks / frequency)
        {
            stopwatchTicks = MaxStopwatchTicks;
            return false;
        }

        long ticks = (seconds * frequency) + CeilingDivide((span.Ticks % TimeSpan.TicksPerSecond) * frequency, TimeSpan.TicksPerSecond);
        stopwatchTicks = Math.Min(ticks, MaxStopwatchTicks);
        return ticks <= MaxStopwatchTicks;
    }

    /// <summary>Converts a non-negative <paramref name="span"/> to <see cref="Stopwatch"/> ticks, rounded up, capped at <see cref="MaxStopwatchTicks"/>.</summary>
    internal static long ToStopwatchTicks(TimeSpan span)
    {
        TryToStopwatchTicks(span, out long stopwatchTicks);
        return stopwatchTicks;
    }

    /// <summary>Converts non-negative <see cref="Stopwatch"/> ticks to a <see cref="TimeSpan"/>, rounded up.</summary>
    internal static TimeSpan FromStopwatchTicks(long stopwatchTicks)
    {
        long frequency = Stopwatch.Frequency;
        long seconds = stopwatchTicks / frequency;
        long ticks = (seconds * TimeSpan.TicksPerSecond) + CeilingDivide((stopwatchTicks % frequency) * TimeSpan.TicksPerSecond, frequency);
        return TimeSpan.FromTicks(ticks);
    }

    /// <summary>Whole milliseconds as <see cref="Stopwatch"/> ticks (exact for every frequency that is a multiple of 1,000; rounded up otherwise).</summary>
    private static long MillisecondsToStopwatchTicks(int milliseconds)
    {
        long frequency = Stopwatch.Frequency;
        return ((milliseconds / 1000) * frequency) + CeilingDivide((milliseconds % 1000) * frequency, 1000);
    }

    /// <summary><paramref name="value"/> / <paramref name="divisor"/> rounded up, for a non-negative value and a positive divisor.</summary>
    private static long CeilingDivide(long value, long divisor) => (value + divisor - 1) / divisor;
}
