using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>A warm wait loop allocates nothing: no marshalling buffers, no boxing, no closures.</summary>
public class EpollAllocationTests
{
    private const int Iterations = 10_000;

    [Fact]
    public void WarmWaitLoopWithEventsPendingAllocatesNothing()
    {
        using var epoll = EpollHandle.Create();
        using var a = EventFdHandle.Create(1);
        using var b = EventFdHandle.Create(1);
        epoll.Add(a.FileDescriptor, EpollEvents.In, 0x8000_0000_0000_0001UL);
        epoll.Add(b.FileDescriptor, EpollEvents.In | EpollEvents.Out, 2);
        var buffer = new EpollEvent[8];

        WaitLoop(epoll, buffer, 200); // warm: JIT, tiering, first-call stubs
        long before = GC.GetAllocatedBytesForCurrentThread();
        long events = WaitLoop(epoll, buffer, Iterations);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(2L * Iterations, events);
        Assert.Equal(0L, allocated);
    }

    [Fact]
    public void WarmTryWaitAndTimeSpanWaitAllocateNothing()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 3);
        Span<EpollEvent> buffer = stackalloc EpollEvent[4];

        long total = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < Iterations; i++)
            {
                epoll.TryWait(buffer, 0, out int count, out _);
                total += count;
                total += epoll.Wait(buffer, TimeSpan.Zero);
            }

            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (pass == 1)
            {
                Assert.Equal(0L, allocated);
            }
        }

        Assert.Equal(4L * Iterations, total);
    }

    [Fact]
    public void WarmControlAndEventFdCallsAllocateNothing()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        int fd = efd.FileDescriptor;
        for (int pass = 0; pass < 2; pass++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++)
            {
                epoll.Add(fd, EpollEvents.In, (ulong)i);
                epoll.Modify(fd, EpollEvents.In | EpollEvents.OneShot, (ulong)i);
                epoll.TryAdd(fd, EpollEvents.In, 0, out _); // EEXIST, returned, not thrown
                epoll.Delete(efd);
                efd.Signal();
                efd.TryRead(out _);
            }

            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (pass == 1)
            {
                Assert.Equal(0L, allocated);
            }
        }
    }

    private static long WaitLoop(EpollHandle epoll, EpollEvent[] buffer, int iterations)
    {
        long events = 0;
        for (int i = 0; i < iterations; i++)
        {
            events += epoll.Wait(buffer, 0);
        }

        return events;
    }
}
