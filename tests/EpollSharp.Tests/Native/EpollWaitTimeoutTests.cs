using System.Diagnostics;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>Wait with -1, 0 and positive timeouts, in milliseconds and as TimeSpan. Bounds are generous: no tight timing.</summary>
public class EpollWaitTimeoutTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(5);

    [Fact]
    public void ZeroTimeoutReturnsAtOnceWithNothingReady()
    {
        using var epoll = EpollHandle.Create();
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, epoll.Wait(new EpollEvent[4], 0));
        Assert.True(sw.Elapsed < Generous);
    }

    [Fact]
    public void ZeroTimeoutWithNothingRegistered()
    {
        using var epoll = EpollHandle.Create();
        Assert.Equal(0, epoll.Wait(new EpollEvent[1], TimeSpan.Zero));
    }

    [Theory]
    [InlineData(30)]
    [InlineData(100)]
    public void PositiveTimeoutReturnsZeroAfterRoughlyTheTimeout(int milliseconds)
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, epoll.Wait(new EpollEvent[4], milliseconds));
        Assert.InRange(sw.Elapsed.TotalMilliseconds, milliseconds * 0.8, Generous.TotalMilliseconds);
    }

    [Fact]
    public void TimeSpanTimeoutReturnsZeroAfterRoughlyTheTimeout()
    {
        using var epoll = EpollHandle.Create();
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, epoll.Wait(new EpollEvent[4], TimeSpan.FromMilliseconds(50)));
        Assert.InRange(sw.Elapsed.TotalMilliseconds, 40, Generous.TotalMilliseconds);
    }

    [Fact]
    public void SubMillisecondTimeSpanWaitsAtLeastOneMillisecond()
    {
        // 0.3 ms rounds up to 1 ms: a real (short) sleep, never a zero-timeout poll.
        using var epoll = EpollHandle.Create();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(0, epoll.Wait(new EpollEvent[1], TimeSpan.FromMilliseconds(0.3)));
        }

        // 20 sleeps of at least 1 ms each; a zero timeout would take microseconds.
        Assert.InRange(sw.Elapsed.TotalMilliseconds, 15, Generous.TotalMilliseconds);
    }

    [Fact]
    public void PositiveTimeoutReturnsEarlyWhenReady()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        var sw = Stopwatch.StartNew();
        Assert.Equal(1, epoll.Wait(new EpollEvent[4], 60_000));
        Assert.True(sw.Elapsed < Generous);
    }

    [Fact]
    public async Task InfiniteTimeoutWaitsUntilSignalled()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 77);
        var waiter = OwnThread.Start(
            () =>
            {
                var buffer = new EpollEvent[2];
                int n = epoll.Wait(buffer, EpollHandle.InfiniteTimeout);
                return (n, buffer[0]);
            });
        await Task.Delay(50);
        Assert.False(waiter.IsCompleted);
        efd.Signal();
        var (count, ev) = await waiter.WaitAsync(Generous);
        Assert.Equal(1, count);
        Assert.Equal(new EpollEvent(EpollEvents.In, 77), ev);
    }

    [Fact]
    public async Task InfiniteTimeSpanWaitsUntilSignalled()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 78);
        var waiter = OwnThread.Start(() => epoll.Wait(new EpollEvent[2], Timeout.InfiniteTimeSpan));
        await Task.Delay(50);
        efd.Signal();
        Assert.Equal(1, await waiter.WaitAsync(Generous));
    }

    [Fact]
    public async Task TryWaitWithInfiniteTimeout()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 5);
        var waiter = OwnThread.Start(
            () =>
            {
                bool ok = epoll.TryWait(new EpollEvent[2], -1, out int count, out int errno);
                return (ok, count, errno);
            });
        await Task.Delay(20);
        efd.Signal();
        Assert.Equal((true, 1, 0), await waiter.WaitAsync(Generous));
    }
}

/// <summary>The TimeSpan conversion and the remaining-time helper used by the EINTR retry.</summary>
public class TimeoutsTests
{
    [Theory]
    [InlineData(0L, 0)]
    [InlineData(1L, 1)] // one tick (100 ns)
    [InlineData(3_000L, 1)] // 0.3 ms
    [InlineData(9_999L, 1)]
    [InlineData(10_000L, 1)] // exactly 1 ms
    [InlineData(10_001L, 2)]
    [InlineData(15_000L, 2)]
    [InlineData(1_000_000L, 100)]
    public void ToMillisecondsRoundsUp(long ticks, int expected) =>
        Assert.Equal(expected, Timeouts.ToMilliseconds(TimeSpan.FromTicks(ticks), "timeout"));

    [Fact]
    public void ToMillisecondsInfiniteIsMinusOne() =>
        Assert.Equal(-1, Timeouts.ToMilliseconds(Timeout.InfiniteTimeSpan, "timeout"));

    [Fact]
    public void ToMillisecondsLargestValue() =>
        Assert.Equal(int.MaxValue, Timeouts.ToMilliseconds(TimeSpan.FromMilliseconds(int.MaxValue), "timeout"));

    [Theory]
    [InlineData(-1L)]
    [InlineData(-20_000L)] // -2 ms
    [InlineData(-10_001L)] // just past Infinite (-1 ms = -10,000 ticks)
    public void ToMillisecondsRejectsNegative(long ticks)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Timeouts.ToMilliseconds(TimeSpan.FromTicks(ticks), "timeout"));
        Assert.Equal("timeout", e.ParamName);
    }

    [Fact]
    public void ToMillisecondsRejectsTooLong()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Timeouts.ToMilliseconds(TimeSpan.FromMilliseconds(int.MaxValue + 1.0), "t"));
        Assert.Equal("t", e.ParamName);
    }

    [Fact]
    public void RemainingRightAfterStartIsTheWholeTimeout()
    {
        long start = Stopwatch.GetTimestamp();
        Assert.InRange(Timeouts.Remaining(start, 10_000), 9_000, 10_000);
    }

    [Fact]
    public void RemainingSubtractsElapsedTime()
    {
        long start = Stopwatch.GetTimestamp() - (Stopwatch.Frequency * 30 / 1000); // started 30 ms ago
        Assert.InRange(Timeouts.Remaining(start, 100), 0, 70); // 0 only if this thread stalled 70 ms
    }

    [Fact]
    public void RemainingIsZeroOnceExpired()
    {
        long start = Stopwatch.GetTimestamp() - Stopwatch.Frequency; // started 1 s ago
        Assert.Equal(0, Timeouts.Remaining(start, 100));
        Assert.Equal(0, Timeouts.Remaining(start, 1000));
    }

    [Fact]
    public void RemainingRoundsUp()
    {
        // 0.3 ms elapsed of 1 ms leaves 0.7 ms: rounded up to 1, not down to 0 (which would poll).
        long start = Stopwatch.GetTimestamp() - (Stopwatch.Frequency * 3 / 10_000);
        int left = Timeouts.Remaining(start, 1);
        Assert.InRange(left, 0, 1); // 0 only if this thread was descheduled for 0.7 ms just now
        start = Stopwatch.GetTimestamp() - (Stopwatch.Frequency * 3 / 10_000);
        Assert.InRange(Timeouts.Remaining(start, 1000), 900, 1000);
    }
}
