using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Reflection;

namespace EpollSharp;

/// <summary>
/// The <c>EpollSharp</c> meter (<see cref="System.Diagnostics.Metrics"/>; <c>dotnet-counters</c> and OpenTelemetry read it)
/// and the loop's instruments, tagged with the loop's id and backend. Counters and gauges are observed: the loop keeps plain
/// counts that a listener reads when it collects, so they cost nothing when nobody listens, and next to nothing when someone
/// does. The two histograms and the busy/wait times are measured only while a listener has enabled them.
/// docs/articles/operating.md lists every instrument with its unit.
/// </summary>
internal static class LoopMetrics
{
    /// <summary>The meter's name, for <c>dotnet-counters monitor --counters EpollSharp</c> and OpenTelemetry's <c>AddMeter</c>.</summary>
    internal const string MeterName = "EpollSharp";

    /// <summary>Tag: the loop's process-unique number.</summary>
    internal const string LoopTag = "epollsharp.loop.id";

    /// <summary>Tag: the loop's backend, lower case (<c>epoll</c>, <c>kqueue</c>, <c>managed</c>).</summary>
    internal const string BackendTag = "epollsharp.loop.backend";

    internal static readonly Meter Meter = new(MeterName, typeof(LoopMetrics).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion);

    private static readonly Native.CopyOnWriteList<EventLoop> s_loops = new();

    internal static readonly Histogram<int> EventsPerWait = Meter.CreateHistogram<int>(
        "epollsharp.loop.events_per_wait", "{event}", "Readiness events returned by one wait of the backend.");

    internal static readonly Histogram<double> CallbackDuration = Meter.CreateHistogram<double>(
        "epollsharp.loop.callback.duration", "s", "How long one callback (readiness, timer or posted work) ran on the loop thread.");

    private static readonly ObservableCounter<double> s_busyTime = Meter.CreateObservableCounter(
        "epollsharp.loop.busy_time", () => Observe(static l => l.BusySeconds), "s", "Time the loop thread spent running callbacks, timers and posted work (measured while this instrument is enabled).");

    private static readonly ObservableCounter<double> s_waitTime = Meter.CreateObservableCounter(
        "epollsharp.loop.wait_time", () => Observe(static l => l.WaitSeconds), "s", "Time the loop thread spent waiting for readiness (measured while this instrument is enabled).");

    static LoopMetrics()
    {
        Meter.CreateObservableCounter("epollsharp.loop.iterations", () => Observe(static l => l.MetricIterations), "{iteration}", "Loop iterations: a wait, its events, the due timers and the posted work.");
        Meter.CreateObservableCounter("epollsharp.loop.events", () => Observe(static l => l.MetricEventsDispatched), "{event}", "Readiness events delivered to a registration's callback.");
        Meter.CreateObservableCounter("epollsharp.loop.stale_events", () => Observe(static l => l.MetricStaleEvents), "{event}", "Readiness events dropped because their registration was gone (disposed, or its slot reused).");
        Meter.CreateObservableCounter("epollsharp.loop.wakeups", () => Observe(static l => l.MetricWakeupsSent), "{wakeup}", "Wake-ups sent to a waiting loop by work posted from other threads.");
        Meter.CreateObservableCounter("epollsharp.loop.coalesced_wakeups", () => Observe(static l => l.MetricWakeupsCoalesced), "{wakeup}", "Posts from other threads that needed no wake-up of their own, because one was outstanding.");
        Meter.CreateObservableUpDownCounter("epollsharp.loop.registrations", () => Observe(static l => (long)l.RegistrationCount), "{registration}", "Live registrations (sockets and handles watched).");
        Meter.CreateObservableUpDownCounter("epollsharp.loop.timers", () => Observe(static l => (long)l.ActiveTimerCount), "{timer}", "Scheduled timers.");
    }

    /// <summary>Whether the busy and wait times are being collected (then each iteration reads the clock twice).</summary>
    internal static bool TimingEnabled => s_busyTime.Enabled || s_waitTime.Enabled;

    internal static void Add(EventLoop loop) => s_loops.Add(loop);

    internal static void Remove(EventLoop loop) => s_loops.Remove(loop);

    /// <summary>The lower-case name of a backend, for the backend tag.</summary>
    internal static string BackendName(EventLoopBackend backend) => backend switch
    {
        EventLoopBackend.Epoll => "epoll",
        EventLoopBackend.Kqueue => "kqueue",
        EventLoopBackend.Managed => "managed",
        EventLoopBackend.IoUring => "io_uring",
        _ => backend.ToString().ToLowerInvariant(),
    };

    private static IEnumerable<Measurement<T>> Observe<T>(Func<EventLoop, T> read)
        where T : struct
    {
        EventLoop[] loops = s_loops.Snapshot;
        var measurements = new Measurement<T>[loops.Length];
        for (int i = 0; i < loops.Length; i++)
        {
            measurements[i] = new Measurement<T>(read(loops[i]), loops[i].LoopIdTag, loops[i].BackendTag);
        }

        return measurements;
    }
}
