using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Runtime.InteropServices;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

/// <summary>
/// Tests that count the whole process's descriptors, GC handles or heap, or that send it signals: they run alone
/// (xUnit runs a collection with parallelization disabled after the parallel ones, one test at a time), so that
/// another test's sockets do not show up in their counts.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWide
{
    public const string Name = "Reliability: process-wide measurements (not parallel)";
}

/// <summary>What the process holds: descriptors, GC handles, managed heap, threads.</summary>
public readonly record struct ResourceSnapshot(int Descriptors, long GcHandles, long HeapBytes, int Threads)
{
    /// <summary>
    /// Counts descriptors first, before any collection, so a socket that was leaked and would only be closed by its
    /// finalizer is still counted (a leak that waits for the GC is a leak: its peer hangs until then). Then a full
    /// blocking collection, finalizers, another collection, and the GC handle count and heap size after it.
    /// </summary>
    public static ResourceSnapshot Take()
    {
        int descriptors = Fds.CountOpen();
        long heap = Resources.CollectAndMeasureHeap();
        long handles = Resources.GcHandleCount();
        return new ResourceSnapshot(descriptors, handles, heap, Process.GetCurrentProcess().Threads.Count);
    }

    /// <summary>
    /// A snapshot to compare against, taken once the runtime has settled: for a second or two after code has become hot, the
    /// runtime keeps creating GC handles of its own in the background (about 130 in this test process, while idle, from its
    /// tiered compilation), so this waits until three counts 300 ms apart agree within 2 (8 s at most). The callers run their
    /// scenario at full size once before, so that the code it makes hot is compiled by then.
    /// </summary>
    public static ResourceSnapshot Baseline(ITestOutputHelper output)
    {
        var sw = Stopwatch.StartNew();
        long previous = Resources.GcHandleCount();
        int stable = 0;
        while (stable < 2 && sw.ElapsedMilliseconds < 8000)
        {
            Thread.Sleep(300);
            long now = Resources.GcHandleCount();
            stable = Math.Abs(now - previous) <= 2 ? stable + 1 : 0;
            previous = now;
        }

        ResourceSnapshot baseline = Take();
        output.WriteLine($"baseline after {sw.ElapsedMilliseconds} ms of settling: {baseline}");
        return baseline;
    }

    public override string ToString() =>
        $"descriptors {Descriptors}, GC handles {GcHandles}, managed heap {HeapBytes / 1024.0:N0} KiB, threads {Threads}";
}

/// <summary>Counts a process's resources the way the reliability tests state them.</summary>
public static class Resources
{
    /// <summary>Full blocking compacting collections with the finalizers run in between; then <see cref="GC.GetTotalMemory"/>.</summary>
    public static long CollectAndMeasureHeap()
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }

        return GC.GetTotalMemory(forceFullCollection: true);
    }

    /// <summary>
    /// The number of GC handles (strong, weak, pinned, dependent...) in the process, as the runtime reports it in its
    /// <c>GCHeapStats</c> event at the end of a collection. .NET exposes no API or event counter for it; an in-process
    /// <see cref="EventListener"/> on the runtime's provider (GC keyword) reads the event's <c>GCHandleCount</c> field
    /// after a forced collection. Returns -1 if no event arrived within 10 s.
    /// </summary>
    public static long GcHandleCount()
    {
        // The first listener of the process sets up the runtime's event machinery, which takes GC handles of its own
        // after the count it reports: measure once for nothing, so that the first real count already includes them.
        if (Interlocked.Exchange(ref s_primed, 1) == 0)
        {
            CountGcHandles();
        }

        return CountGcHandles();
    }

    private static int s_primed;

    private static long CountGcHandles()
    {
        using var listener = new GcStatsListener();
        for (int attempt = 0; attempt < 100; attempt++)
        {
            long seen = listener.Events;
            GC.Collect();
            var sw = Stopwatch.StartNew();
            while (listener.Events == seen && sw.ElapsedMilliseconds < 100)
            {
                Thread.Sleep(5);
            }

            // Several events can be in flight at once: take one from a collection made after the listener was ready.
            if (listener.Events > seen && attempt > 0)
            {
                return listener.LastHandleCount;
            }
        }

        return -1;
    }

    /// <summary>Polls until <paramref name="condition"/> holds or <paramref name="seconds"/> pass; returns whether it held.</summary>
    public static bool Eventually(Func<bool> condition, double seconds = 10)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed.TotalSeconds > seconds)
            {
                return false;
            }

            Thread.Sleep(20);
        }

        return true;
    }

    /// <summary>
    /// Asserts that the process is back to <paramref name="baseline"/>: descriptors within <paramref name="descriptorSlack"/>
    /// (waiting up to 10 s for asynchronous closes to finish), GC handles within <paramref name="handleSlack"/> plus 4 per
    /// thread the runtime added meanwhile, heap
    /// within <paramref name="heapSlackBytes"/>. Prints both snapshots.
    /// </summary>
    public static ResourceSnapshot AssertBackTo(ResourceSnapshot baseline, ITestOutputHelper output, string what, int descriptorSlack = 2, long handleSlack = 16, long heapSlackBytes = 2 * 1024 * 1024)
    {
        Eventually(() => Fds.CountOpen() <= baseline.Descriptors + descriptorSlack);
        ResourceSnapshot after = ResourceSnapshot.Take();
        output.WriteLine($"{what}: before: {baseline}");
        output.WriteLine($"{what}: after:  {after}");
        Assert.True(after.Descriptors <= baseline.Descriptors + descriptorSlack, $"{what}: descriptors {baseline.Descriptors} -> {after.Descriptors} (slack {descriptorSlack}): a descriptor leaked");
        if (baseline.GcHandles >= 0 && after.GcHandles >= 0)
        {
            long slack = GcHandleSlack(baseline, after, handleSlack);
            Assert.True(after.GcHandles <= baseline.GcHandles + slack, $"{what}: GC handles {baseline.GcHandles} -> {after.GcHandles} (slack {slack})");
        }

        Assert.True(after.HeapBytes <= baseline.HeapBytes + heapSlackBytes, $"{what}: managed heap {baseline.HeapBytes:N0} -> {after.HeapBytes:N0} bytes (slack {heapSlackBytes:N0})");
        return after;
    }

    /// <summary>
    /// How many more GC handles than <paramref name="baseline"/> <paramref name="after"/> may hold: <paramref name="handleSlack"/>,
    /// plus 4 per thread the runtime added to its pool meanwhile (each holds a few handles of its own: thread statics).
    /// </summary>
    public static long GcHandleSlack(ResourceSnapshot baseline, ResourceSnapshot after, long handleSlack = 16) =>
        handleSlack + (4 * Math.Max(0, after.Threads - baseline.Threads));

    private sealed class GcStatsListener : EventListener
    {
        private const EventKeywords GcKeyword = (EventKeywords)0x1;
        private long _events;
        private long _lastHandleCount = -1;

        public long Events => Interlocked.Read(ref _events);

        public long LastHandleCount => Interlocked.Read(ref _lastHandleCount);

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(eventSource, EventLevel.Informational, GcKeyword);
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.EventName is { } name && name.StartsWith("GCHeapStats", StringComparison.Ordinal) && eventData.PayloadNames is { } names)
            {
                int index = names.IndexOf("GCHandleCount");
                if (index >= 0)
                {
                    Interlocked.Exchange(ref _lastHandleCount, Convert.ToInt64(eventData.Payload![index], System.Globalization.CultureInfo.InvariantCulture));
                    Interlocked.Increment(ref _events);
                }
            }
        }
    }
}

/// <summary>
/// Runs blocking client code on threads of its own. The thread pool of a 2-core machine adds threads slowly (about one per
/// half second) when its work items block, so blocking clients queued to it would start late and in bursts.
/// </summary>
public static class OwnThreads
{
    /// <summary>Runs <paramref name="body"/>(0 .. count-1) on <paramref name="count"/> threads; waits; rethrows the first failure.</summary>
    public static void Run(int count, Action<int> body, double timeoutSeconds = 60)
    {
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var threads = new Thread[count];
        for (int i = 0; i < count; i++)
        {
            int index = i;
            threads[i] = new Thread(() =>
            {
                try
                {
                    body(index);
                }
                catch (Exception e)
                {
                    failures.Enqueue(e);
                }
            })
            { IsBackground = true };
            threads[i].Start();
        }

        var sw = Stopwatch.StartNew();
        foreach (Thread thread in threads)
        {
            TimeSpan left = TimeSpan.FromSeconds(timeoutSeconds) - sw.Elapsed;
            Assert.True(thread.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero), $"a client thread did not finish within {timeoutSeconds} s");
        }

        if (failures.TryDequeue(out Exception? first))
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
    }

    /// <summary>Starts <paramref name="body"/> on a background thread of its own.</summary>
    public static Thread Start(Action body)
    {
        var thread = new Thread(() => body()) { IsBackground = true };
        thread.Start();
        return thread;
    }
}

/// <summary>libc calls these tests need and the library does not bind.</summary>
internal static partial class ReliabilityLibc
{
    public const int SIGURG = 23; // x86-64 and arm64
    public const int SIGUSR2 = 12;

    [LibraryImport("libc.so.6", EntryPoint = "gettid")]
    public static partial int gettid();

    [LibraryImport("libc.so.6", EntryPoint = "tgkill", SetLastError = true)]
    public static partial int tgkill(int tgid, int tid, int sig);
}
