using System.IO;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// Batching waits of the io_uring backend (Linux 6.12's <c>min_wait_usec</c>, on a ring bound to the loop's thread): a
/// wait that asks for many completions waits at most the min-wait for them and returns with what arrived, but a timer's
/// deadline and a wake-up from another thread end it at once. The tests stretch the min-wait to seconds, so that a wait
/// that overstayed would be plain to see (the bounds asserted are a fraction of it, not speeds); real kernel, real sockets.
/// </summary>
public sealed class IoUringBatchingWaitTests
{
    /// <summary>A min-wait far longer than anything these tests wait for.</summary>
    private const uint LongMinWaitMicroseconds = 4_000_000;

    private readonly ITestOutputHelper _output;

    public IoUringBatchingWaitTests(ITestOutputHelper output) => _output = output;

    private IoUringBackend NewBatchingBackend()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        var backend = new IoUringBackend(64, 0, completions: false);
        if (!backend.BatchingWaits)
        {
            _output.WriteLine($"kernel {Environment.OSVersion.Version}, issuer-bound {backend.IssuerBound}");
            backend.Dispose();
            Skip.If(true, "batching waits need an issuer-bound ring and IORING_FEAT_MIN_TIMEOUT (Linux 6.12)");
        }

        backend.MinWaitMicroseconds = LongMinWaitMicroseconds;
        backend.MinCompleteOverride = 1000;

        // The first wait binds the ring to this thread and arms the wake-up poll.
        Span<BackendEvent> events = stackalloc BackendEvent[8];
        backend.Wait(events, 0);
        return backend;
    }

    [SkippableFact]
    public void The_min_wait_setting_is_parsed_and_clamped()
    {
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.ParseMinWait(null));
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.ParseMinWait("fast"));
        Assert.Equal(IoUringBackend.DefaultMinWaitMicroseconds, IoUringBackend.ParseMinWait("-5"));
        Assert.Equal(0u, IoUringBackend.ParseMinWait("0"));
        Assert.Equal(20u, IoUringBackend.ParseMinWait(" 20 "));
        Assert.Equal(IoUringBackend.MaxMinWaitMicroseconds, IoUringBackend.ParseMinWait("999999"));
    }

    [SkippableFact]
    public void A_batching_wait_ends_at_a_wake_from_another_thread()
    {
        using IoUringBackend backend = NewBatchingBackend();

        // This thread's id in the kernel: the waker wakes once the thread sleeps inside io_uring_enter (the kernel's wait
        // itself, not the way into it, where a wake-up's timeout could fire before the wait takes note of the timeouts).
        string task = Path.GetFileName(Directory.ResolveLinkTarget("/proc/thread-self", returnFinalTarget: false)!.FullName);
        for (int round = 0; round < 3; round++)
        {
            var waker = new Thread(() =>
            {
                var until = Stopwatch.StartNew();
                while (!SleepsInIoUringEnter(task) && until.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Sleep(1);
                }

                backend.Wake();
            });
            var sw = Stopwatch.StartNew();
            waker.Start();
            var events = new BackendEvent[8];
            int n = backend.Wait(events, -1);
            sw.Stop();
            waker.Join();
            _output.WriteLine($"round {round}: {n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");

            // The wake-up ended the wait, not the min-wait (4 s) nor anything else: a wake-up yields no event.
            Assert.Equal(0, n);
            Assert.True(sw.Elapsed < TimeSpan.FromMicroseconds(LongMinWaitMicroseconds / 2), $"the wait took {sw.Elapsed}: the wake-up waited for the min-wait");
        }
    }

    /// <summary>Whether the thread <paramref name="task"/> of this process sleeps in <c>io_uring_enter</c> (426 on every 64-bit ABI).</summary>
    private static bool SleepsInIoUringEnter(string task)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/self/task/{task}/stat");
            char state = stat[stat.LastIndexOf(')') + 2];
            string syscall = File.ReadAllText($"/proc/self/task/{task}/syscall");
            return state == 'S' && syscall.StartsWith("426 ", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }

    [SkippableFact]
    public void A_batching_wait_ends_at_its_deadline()
    {
        using IoUringBackend backend = NewBatchingBackend();
        var events = new BackendEvent[8];
        for (int round = 0; round < 3; round++)
        {
            var sw = Stopwatch.StartNew();
            int n = backend.Wait(events, 50);
            sw.Stop();
            _output.WriteLine($"round {round}: {n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");
            Assert.Equal(0, n);

            // Not before the deadline (1 ms of clock granularity allowed), and not at the min-wait's end (4 s).
            Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(49), $"returned after {sw.Elapsed}, before its deadline");
            Assert.True(sw.Elapsed < TimeSpan.FromMicroseconds(LongMinWaitMicroseconds / 2), $"the wait took {sw.Elapsed}: the deadline waited for the min-wait");
        }
    }

    [SkippableFact]
    public void A_batching_wait_returns_what_arrived_when_the_min_wait_ends()
    {
        using IoUringBackend backend = NewBatchingBackend();
        const uint minWait = 200_000;
        backend.MinWaitMicroseconds = minWait;
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using Socket server = listener.Accept();
        client.Send(new byte[] { 1 });

        // One readable socket, far fewer completions than the wait asks for: it waits out the min-wait (the batch it was
        // waiting for never comes), then returns with the one event, with no deadline of its own.
        backend.Add(new BackendTarget(server.SafeHandle, server), 42, Interest.Readable, TriggerMode.Edge);
        var events = new BackendEvent[8];
        var sw = Stopwatch.StartNew();
        int n = backend.Wait(events, -1);
        sw.Stop();
        _output.WriteLine($"{n} events after {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(1, n);
        Assert.Equal(42UL, events[0].Token);
        Assert.True((events[0].Readiness & Readiness.Readable) != 0, events[0].Readiness.ToString());
        Assert.True(sw.Elapsed >= TimeSpan.FromMicroseconds(minWait / 2), $"returned after {sw.Elapsed}: the wait did not batch");

        // With the min-wait off, the same wait returns at the first completion.
        backend.MinWaitMicroseconds = 0;
        client.Send(new byte[] { 2 });
        n = backend.Wait(events, 10_000);
        Assert.Equal(1, n);
        Assert.Equal(42UL, events[0].Token);
    }
}
