using System.Diagnostics;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>The one rounding rule of <see cref="Timeouts"/>: a wait rounds up, never early, and long times are capped.</summary>
public class TimeRoundingTests
{
    [Fact]
    public void A_wait_for_nothing_left_is_zero()
    {
        Assert.Equal(0, Timeouts.ToWaitMilliseconds(0));
        Assert.Equal(0, Timeouts.ToWaitMilliseconds(-Stopwatch.Frequency));
    }

    [Fact]
    public void A_wait_of_a_fraction_of_a_millisecond_rounds_up_to_one()
    {
        Assert.Equal(1, Timeouts.ToWaitMilliseconds(1));
        Assert.Equal(1, Timeouts.ToWaitMilliseconds(Stopwatch.Frequency * 3 / 10_000)); // 0.3 ms
        Assert.Equal(1, Timeouts.ToWaitMilliseconds(Stopwatch.Frequency / 1000)); // exactly 1 ms
        Assert.Equal(2, Timeouts.ToWaitMilliseconds((Stopwatch.Frequency / 1000) + 1));
    }

    [Fact]
    public void A_wait_longer_than_an_int_of_milliseconds_is_capped()
    {
        Assert.Equal(int.MaxValue, Timeouts.ToWaitMilliseconds(long.MaxValue));
        Assert.Equal(int.MaxValue, Timeouts.ToWaitMilliseconds(Stopwatch.Frequency * (long)int.MaxValue / 1000 * 2));
    }

    [Fact]
    public void A_span_converts_to_stopwatch_ticks_rounded_up()
    {
        Assert.True(Timeouts.TryToStopwatchTicks(TimeSpan.Zero, out long zero));
        Assert.Equal(0, zero);
        Assert.True(Timeouts.ToStopwatchTicks(TimeSpan.FromTicks(1)) >= 1);
        Assert.Equal(Stopwatch.Frequency, Timeouts.ToStopwatchTicks(TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void A_span_too_long_for_a_timestamp_is_refused_or_capped()
    {
        Assert.False(Timeouts.TryToStopwatchTicks(TimeSpan.MaxValue, out long capped));
        Assert.Equal(Timeouts.MaxStopwatchTicks, capped);
        Assert.Equal(Timeouts.MaxStopwatchTicks, Timeouts.ToStopwatchTicks(TimeSpan.MaxValue));
    }

    [Theory]
    [InlineData(1L)]
    [InlineData(10_000L)]
    [InlineData(12_345_678L)]
    [InlineData(864_000_000_000L)]
    public void A_round_trip_through_stopwatch_ticks_is_never_earlier(long ticks)
    {
        TimeSpan span = TimeSpan.FromTicks(ticks);
        TimeSpan back = Timeouts.FromStopwatchTicks(Timeouts.ToStopwatchTicks(span));
        Assert.True(back >= span);
        if (Stopwatch.Frequency % TimeSpan.TicksPerSecond == 0)
        {
            Assert.Equal(span, back);
        }
    }

    [Fact]
    public void One_stopwatch_tick_is_not_rounded_down_to_nothing()
    {
        Assert.True(Timeouts.FromStopwatchTicks(1) > TimeSpan.Zero);
    }
}
