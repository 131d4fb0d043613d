using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

public class EventFdTests
{
    [Fact]
    public void CreateIsCloseOnExecAndNonBlocking()
    {
        using var efd = EventFdHandle.Create();
        Assert.False(efd.IsInvalid);
        Assert.Equal("anon_inode:[eventfd]", Fds.LinkTarget(efd.FileDescriptor));
        int flags = Fds.Flags(efd.FileDescriptor);
        Assert.True((flags & Fds.OCloExec) != 0, $"flags 0{Convert.ToString(flags, 8)} lack O_CLOEXEC");
        Assert.True((flags & Fds.ONonBlock) != 0, $"flags 0{Convert.ToString(flags, 8)} lack O_NONBLOCK");
    }

    [Fact]
    public void NewCounterIsZeroAndReadReturnsFalse()
    {
        using var efd = EventFdHandle.Create();
        Assert.False(efd.TryRead(out ulong value));
        Assert.Equal(0UL, value);
    }

    [Fact]
    public void InitialValueIsReadOnceThenReset()
    {
        using var efd = EventFdHandle.Create(5);
        Assert.Equal("5", Fds.FdInfo(efd.FileDescriptor)["eventfd-count"]);
        Assert.True(efd.TryRead(out ulong value));
        Assert.Equal(5UL, value);
        Assert.False(efd.TryRead(out value));
        Assert.Equal(0UL, value);
    }

    [Fact]
    public void SignalsAddUp()
    {
        using var efd = EventFdHandle.Create();
        Assert.True(efd.Signal());
        Assert.True(efd.Signal(3));
        Assert.True(efd.Signal(0x1_0000_0000UL));
        Assert.True(efd.TryRead(out ulong value));
        Assert.Equal(0x1_0000_0004UL, value);
        Assert.False(efd.TryRead(out _));
    }

    [Fact]
    public void SemaphoreModeTakesOneAtATime()
    {
        using var efd = EventFdHandle.Create(2, semaphore: true);
        efd.Signal(1);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(efd.TryRead(out ulong value));
            Assert.Equal(1UL, value);
        }

        Assert.False(efd.TryRead(out _));
    }

    [Fact]
    public void SemaphoreModeStaysReadableUntilEmpty()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(2, semaphore: true);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        Assert.Single(Waits.Poll(epoll));
        efd.TryRead(out _);
        Assert.Single(Waits.Poll(epoll));
        efd.TryRead(out _);
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void ReadableInEpollWhileCounterIsNonZero()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.Out, 3);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 3) }, Waits.Poll(epoll));
        efd.Signal();
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In | EpollEvents.Out, 3) }, Waits.Poll(epoll));
        efd.TryRead(out _);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 3) }, Waits.Poll(epoll));
    }

    [Fact]
    public async Task SignalFromAnotherThreadWakesAWaitingEpoll()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 0xC0FFEE);
        using var waiting = new ManualResetEventSlim();
        var waiter = OwnThread.Start(
            () =>
            {
                var buffer = new EpollEvent[4];
                waiting.Set();
                int n = epoll.Wait(buffer, 30_000);
                return n == 1 ? buffer[0] : default;
            });
        waiting.Wait();
        await Task.Delay(30);
        await Task.Run(() => Assert.True(efd.Signal()));
        var ev = await waiter.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(new EpollEvent(EpollEvents.In, 0xC0FFEE), ev);
        Assert.True(efd.TryRead(out ulong value));
        Assert.Equal(1UL, value);
    }

    [Fact]
    public void OverflowReturnsFalseAndKeepsTheCounter()
    {
        using var efd = EventFdHandle.Create();
        const ulong Max = 0xFFFF_FFFF_FFFF_FFFEUL;
        Assert.True(efd.Signal(Max));
        Assert.False(efd.Signal()); // EAGAIN: would exceed the maximum; the descriptor is readable already
        Assert.False(efd.Signal(Max));
        Assert.True(efd.TryRead(out ulong value));
        Assert.Equal(Max, value);
        Assert.True(efd.Signal());
    }

    [Fact]
    public void OverflowJustBelowTheMaximum()
    {
        using var efd = EventFdHandle.Create(10);
        Assert.True(efd.Signal(0xFFFF_FFFF_FFFF_FFFEUL - 10));
        Assert.False(efd.Signal(1));
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(ulong.MaxValue)]
    public void InvalidSignalValuesThrow(ulong value)
    {
        using var efd = EventFdHandle.Create();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => efd.Signal(value));
        Assert.Equal("value", e.ParamName);
        Assert.False(efd.TryRead(out _));
    }

    [Fact]
    public void DisposedThrowsObjectDisposed()
    {
        var efd = EventFdHandle.Create();
        efd.Dispose();
        Assert.True(efd.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => efd.FileDescriptor);
        Assert.Throws<ObjectDisposedException>(() => efd.Signal());
        Assert.Throws<ObjectDisposedException>(() => efd.TryRead(out _));
        // The argument check comes first.
        Assert.Throws<ArgumentOutOfRangeException>(() => efd.Signal(0));
    }

    [Fact]
    public void ManySignallersOneReader()
    {
        using var efd = EventFdHandle.Create();
        const int Threads = 4;
        const int PerThread = 1000;
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, _ =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                Assert.True(efd.Signal());
            }
        });
        Assert.True(efd.TryRead(out ulong value));
        Assert.Equal((ulong)(Threads * PerThread), value);
    }
}
