using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>One epoll instance used from several threads at once: the kernel serialises epoll_ctl, and the handle's reference counting keeps the descriptor alive.</summary>
public class EpollConcurrencyTests
{
    [Fact]
    public void ThreadsAddModifyDeleteWhileAnotherWaits()
    {
        const int Workers = 4;
        const int Rounds = 300;
        using var epoll = EpollHandle.Create();
        var errors = new ConcurrentQueue<Exception>();
        var seen = new ConcurrentDictionary<ulong, bool>();
        using var stop = new CancellationTokenSource();

        var waiter = new Thread(() =>
        {
            var buffer = new EpollEvent[32];
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    int n = epoll.Wait(buffer, 10);
                    for (int i = 0; i < n; i++)
                    {
                        seen.TryAdd(buffer[i].Data, true);
                    }
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        });
        waiter.Start();

        var workers = Enumerable.Range(0, Workers).Select(w => new Thread(() =>
        {
            try
            {
                var efds = Enumerable.Range(0, 4).Select(_ => EventFdHandle.Create(1)).ToArray();
                try
                {
                    for (int round = 0; round < Rounds; round++)
                    {
                        foreach (var (efd, k) in efds.Select((e, k) => (e, k)))
                        {
                            ulong data = ((ulong)w << 48) | ((ulong)k << 32) | (uint)round;
                            epoll.Add(efd.FileDescriptor, EpollEvents.In, data);
                            epoll.Modify(efd.FileDescriptor, EpollEvents.In | EpollEvents.Out, data | (1UL << 63));
                        }

                        var own = new EpollEvent[8];
                        epoll.Wait(own, 0); // several threads may wait at once, too
                        foreach (var efd in efds)
                        {
                            epoll.Delete(efd.FileDescriptor);
                        }
                    }
                }
                finally
                {
                    foreach (var efd in efds)
                    {
                        efd.Dispose();
                    }
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        })).ToList();
        workers.ForEach(t => t.Start());
        foreach (var t in workers)
        {
            Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a worker did not finish");
        }

        stop.Cancel();
        Assert.True(waiter.Join(TimeSpan.FromSeconds(30)), "the waiter did not finish");
        Assert.Empty(errors);
        Assert.Equal(0, epoll.Wait(new EpollEvent[8], 0)); // everything was deleted
        Assert.All(seen.Keys, data => Assert.InRange((int)((data >> 48) & 0x7FFF), 0, Workers - 1));
    }

    [Fact]
    public void DisposeWhileAnotherThreadWaitsClosesAfterTheWaitReturns()
    {
        var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        using var inWait = new ManualResetEventSlim();
        var waiter = OwnThread.Start(
            () =>
            {
                inWait.Set();
                return epoll.Wait(new EpollEvent[1], 20_000);
            });
        inWait.Wait();
        Thread.Sleep(50);
        // The wait holds a reference (SafeHandle reference counting): the descriptor is closed only when
        // the wait returns, so the waiting thread never polls a closed or reused number.
        epoll.Dispose();
        Assert.False(epoll.IsClosed);
        efd.Signal();
        Assert.True(waiter.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, waiter.Result);
        Assert.True(epoll.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => epoll.Add(efd.FileDescriptor, EpollEvents.In, 2));
    }

    [Fact]
    public void ManyThreadsWaitOnOneInstance()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.EdgeTriggered, 1);
        var results = new ConcurrentBag<int>();
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() => results.Add(epoll.Wait(new EpollEvent[1], 300)))).ToList();
        threads.ForEach(t => t.Start());
        Thread.Sleep(50);
        efd.Signal();
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(10))));
        // epoll(7): with EPOLLET, one edge wakes just one of the threads blocked on the instance.
        Assert.Equal(4, results.Count);
        Assert.Equal(1, results.Sum());
    }
}
