using System.Diagnostics;
using EpollSharp.Backends;

namespace EpollSharp.Tests.Backends;

/// <summary>The managed backend's <see cref="IPollBackend"/> contract, driven directly (no loop): wake-ups and timeouts.</summary>
public sealed class ManagedBackendWaitTests
{
    [Fact]
    public void Wake_before_the_wait_makes_it_return_at_once()
    {
        using var backend = new ManagedBackend(16);
        var events = new BackendEvent[16];
        backend.Wake();
        backend.Wake();
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, backend.Wait(events, -1));
        Assert.True(sw.ElapsedMilliseconds < 1000, $"{sw.ElapsedMilliseconds} ms");

        // Consumed: the next wait times out.
        Assert.Equal(0, backend.Wait(events, 30));
    }

    [Fact]
    public void Wake_from_another_thread_ends_an_infinite_wait()
    {
        using var backend = new ManagedBackend(16);
        var events = new BackendEvent[16];
        for (int i = 0; i < 50; i++)
        {
            var waiter = Task.Run(() => backend.Wait(events, -1));
            Thread.Sleep(i % 5);
            backend.Wake();
            Assert.True(waiter.Wait(TimeSpan.FromSeconds(10)), $"round {i}: the wait did not end");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(50)]
    public void Wait_honours_its_timeout(int timeout)
    {
        using var pair = SocketPair.Create();
        using var backend = new ManagedBackend(16);
        var events = new BackendEvent[16];
        backend.Add(new BackendTarget(pair.Local.SafeHandle, pair.Local), 7, Interest.Readable, TriggerMode.Level);
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, backend.Wait(events, timeout));
        double ms = sw.Elapsed.TotalMilliseconds;
        Assert.True(ms >= timeout - 1, $"returned after {ms} ms, timeout {timeout}");
        Assert.True(ms < timeout + 1000, $"returned after {ms} ms, timeout {timeout}");
    }

    [Fact]
    public void Removed_target_is_never_reported_and_a_full_buffer_rotates()
    {
        var pairs = new SocketPair[5];
        using var backend = new ManagedBackend(2);
        var events = new BackendEvent[2];
        try
        {
            for (int i = 0; i < pairs.Length; i++)
            {
                pairs[i] = SocketPair.Create();
                backend.Add(new BackendTarget(pairs[i].Local.SafeHandle, pairs[i].Local), (ulong)i, Interest.Readable, TriggerMode.Level);
                pairs[i].Peer.Send(new byte[] { 1 });
            }

            Thread.Sleep(20);
            backend.Remove(new BackendTarget(pairs[2].Local.SafeHandle, pairs[2].Local));

            // Five ready, one removed, two per wait: four distinct tokens within a few waits, never token 2.
            var seen = new bool[5];
            for (int w = 0; w < 4; w++)
            {
                int n = backend.Wait(events, 1000);
                Assert.Equal(2, n);
                for (int k = 0; k < n; k++)
                {
                    Assert.NotEqual(2UL, events[k].Token);
                    seen[(int)events[k].Token] = true;
                }
            }

            Assert.True(seen[0] && seen[1] && seen[3] && seen[4], string.Join(",", seen));
        }
        finally
        {
            foreach (SocketPair p in pairs)
            {
                p?.Dispose();
            }
        }
    }

    [Fact]
    public void A_wait_that_starts_after_Remove_returned_never_reports_the_target()
    {
        using var backend = new ManagedBackend(16);
        var events = new BackendEvent[16];
        int violations = 0;
        for (int round = 0; round < 100; round++)
        {
            using var pair = SocketPair.Create();
            var target = new BackendTarget(pair.Local.SafeHandle, pair.Local);
            ulong token = (ulong)round + 1;
            backend.Add(target, token, Interest.Readable, TriggerMode.Level);
            pair.Peer.Send(new byte[] { 1 });
            int removed = 0;
            var waiter = Task.Run(() =>
            {
                for (int w = 0; w < 20; w++)
                {
                    bool removedBefore = Volatile.Read(ref removed) != 0;
                    int n = backend.Wait(events, 5);
                    for (int k = 0; k < n; k++)
                    {
                        if (removedBefore && events[k].Token == token)
                        {
                            Interlocked.Increment(ref violations);
                        }
                    }
                }
            });

            Thread.SpinWait(100 * round);
            backend.Remove(target);
            Volatile.Write(ref removed, 1);
            backend.Wake();
            Assert.True(waiter.Wait(TimeSpan.FromSeconds(10)));
        }

        Assert.Equal(0, violations);
    }
}
