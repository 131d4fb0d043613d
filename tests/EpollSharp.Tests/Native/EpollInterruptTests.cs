using System.Diagnostics;
using System.Runtime.InteropServices;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>
/// EINTR: a signal delivered to the waiting thread interrupts <c>epoll_wait</c> (it is never restarted, whatever
/// SA_RESTART says). The wrapper must retry with the time that remains, not throw and not start the full
/// timeout again. The signal is SIGUSR1, sent with <c>tgkill</c> to the waiting thread; a process-wide
/// <see cref="PosixSignalRegistration"/> that cancels the default action (terminate) is kept for the whole run,
/// so a late signal can never kill the test host.
/// </summary>
public class EpollInterruptTests
{
    private static int s_signals;
    private static readonly PosixSignalRegistration s_registration = PosixSignalRegistration.Create(
        (PosixSignal)TestLibc.SIGUSR1,
        context =>
        {
            context.Cancel = true;
            Interlocked.Increment(ref s_signals);
        });

    [Fact]
    public void TimedWaitInterruptedBySignalsReturnsAfterRoughlyTheTimeout()
    {
        GC.KeepAlive(s_registration);
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);

        const int Timeout = 400;
        int tid = 0;
        int result = -1;
        Exception? failure = null;
        var elapsed = TimeSpan.Zero;
        using var started = new ManualResetEventSlim();
        var waiter = new Thread(() =>
        {
            try
            {
                Volatile.Write(ref tid, TestLibc.gettid());
                started.Set();
                var sw = Stopwatch.StartNew();
                result = epoll.Wait(new EpollEvent[4], Timeout);
                elapsed = sw.Elapsed;
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        waiter.Start();
        started.Wait();
        int before = Volatile.Read(ref s_signals);

        // Interrupt the wait every 20 ms for as long as it lasts (at most 2.5 s). A wrapper that restarted
        // the full timeout after each EINTR would last until 400 ms after the last signal: 2.9 s.
        int sent = 0;
        var sending = Stopwatch.StartNew();
        while (waiter.IsAlive && sending.ElapsedMilliseconds < 2_500)
        {
            Thread.Sleep(20);
            if (waiter.IsAlive && TestLibc.tgkill(Environment.ProcessId, Volatile.Read(ref tid), TestLibc.SIGUSR1) == 0)
            {
                sent++;
            }
        }

        Assert.True(waiter.Join(TimeSpan.FromSeconds(10)), "the wait did not return");
        Assert.Null(failure);
        Assert.Equal(0, result);
        Assert.True(sent > 0, "no signal was sent");
        // About the timeout in total: not cut short by EINTR, not restarted in full by each retry.
        Assert.InRange(elapsed.TotalMilliseconds, Timeout * 0.8, 1_900);
        SpinWait.SpinUntil(() => Volatile.Read(ref s_signals) > before, TimeSpan.FromSeconds(5));
        Assert.True(Volatile.Read(ref s_signals) > before, "the signal handler never ran");
    }

    [Fact]
    public void InfiniteWaitInterruptedBySignalsKeepsWaiting()
    {
        GC.KeepAlive(s_registration);
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 9);

        int tid = 0;
        int result = -1;
        EpollEvent ev = default;
        Exception? failure = null;
        using var started = new ManualResetEventSlim();
        var waiter = new Thread(() =>
        {
            try
            {
                Volatile.Write(ref tid, TestLibc.gettid());
                started.Set();
                var buffer = new EpollEvent[4];
                result = epoll.Wait(buffer, EpollHandle.InfiniteTimeout);
                ev = buffer[0];
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        waiter.Start();
        started.Wait();
        for (int i = 0; i < 5; i++)
        {
            Thread.Sleep(20);
            TestLibc.tgkill(Environment.ProcessId, Volatile.Read(ref tid), TestLibc.SIGUSR1);
        }

        Thread.Sleep(50);
        Assert.True(waiter.IsAlive, "an interrupted infinite wait returned: " + failure);
        efd.Signal();
        Assert.True(waiter.Join(TimeSpan.FromSeconds(10)), "the wait did not return after the signal");
        Assert.Null(failure);
        Assert.Equal(1, result);
        Assert.Equal(new EpollEvent(EpollEvents.In, 9), ev);
    }
}
