using System.Diagnostics;
using System.Runtime.InteropServices;
using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A signal storm while the loop waits: for 1.5 s a thread sends SIGURG to the loop thread with <c>tgkill</c> as fast as it
/// can, and a child <c>bash</c> loop sends SIGURG to the process with <c>kill</c>, while the loop serves echo clients and
/// runs timers. A handler is installed for SIGURG (PosixSignalRegistration; its default action is to ignore it, which would
/// not interrupt anything), so each signal that lands on the loop thread while it waits interrupts <c>epoll_wait</c> with
/// EINTR. The loop must keep serving (the clients' echoes go on, byte for byte), report no exception, and keep its timers
/// right: none early, none later than 500 ms (a wait that restarted its whole timeout after each interruption would hold
/// them back until the storm ends, 1.4 s for the first), a 10 ms repeating timer neither stalled nor bursting.
/// </summary>
[Collection(ProcessWide.Name)]
public class SignalStormTests
{
    private const int StormMs = 1500;
    private static int s_handled;

    // Kept for the life of the process: a late signal must never meet a default action.
    private static readonly PosixSignalRegistration s_registration = PosixSignalRegistration.Create(
        (PosixSignal)ReliabilityLibc.SIGURG,
        context =>
        {
            context.Cancel = true;
            Interlocked.Increment(ref s_handled);
        });

    private readonly ITestOutputHelper _output;

    public SignalStormTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_signal_storm_while_the_loop_waits_changes_nothing_it_serves(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "tgkill and bash");
        Backends.SkipUnlessAvailable(backend);
        GC.KeepAlive(s_registration);
        await Storm(backend, StormMs);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        await Storm(backend, StormMs);
        Resources.AssertBackTo(baseline, _output, "signal storm");
    }

    private async Task Storm(EventLoopBackend backend, int stormMs)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        int loopThread = server.Harness.Invoke(ReliabilityLibc.gettid);
        var clock = Stopwatch.StartNew();
        var ticks = new ConcurrentQueue<double>();
        int[] oneShotDue = Enumerable.Range(0, (stormMs / 100) - 1).Select(i => 100 + (i * 100)).ToArray();
        var oneShotFired = new double[oneShotDue.Length];
        double scheduledAt = 0;
        LoopTimer repeating = server.Harness.Invoke(() =>
        {
            scheduledAt = clock.Elapsed.TotalMilliseconds;
            for (int i = 0; i < oneShotDue.Length; i++)
            {
                server.Loop.Schedule(TimeSpan.FromMilliseconds(oneShotDue[i]), t => oneShotFired[(int)t.State!] = clock.Elapsed.TotalMilliseconds, i);
            }

            return server.Loop.ScheduleRepeating(TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(10), _ => ticks.Enqueue(clock.Elapsed.TotalMilliseconds));
        });
        var traffic = new EchoTraffic(server.EndPoint, clients: 4, seed: 300);
        traffic.AssertProgress(20);
        long roundTripsBefore = traffic.RoundTrips;
        int handledBefore = Volatile.Read(ref s_handled);

        // The storm.
        using var bash = Process.Start(new ProcessStartInfo("timeout")
        {
            ArgumentList = { "--kill-after=2", (stormMs / 1000.0).ToString(System.Globalization.CultureInfo.InvariantCulture), "bash", "-c", "while :; do kill -s URG \"$0\" || exit 0; done", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            UseShellExecute = false,
        })!;
        long sent = 0;
        var storm = Stopwatch.StartNew();
        while (storm.ElapsedMilliseconds < stormMs)
        {
            if (ReliabilityLibc.tgkill(Environment.ProcessId, loopThread, ReliabilityLibc.SIGURG) == 0)
            {
                sent++;
            }

            if ((sent & 255) == 0)
            {
                Thread.Yield();
            }
        }

        double stormEnded = clock.Elapsed.TotalMilliseconds;
        Assert.True(bash.WaitForExit(10_000), "the kill loop did not stop");
        long roundTripsDuring = traffic.RoundTrips - roundTripsBefore;
        traffic.AssertProgress(20);
        LoopHarness.WaitUntil(() => oneShotFired.All(f => f > 0), "every one-shot timer fires");
        server.Harness.Invoke(repeating.Cancel);
        await traffic.StopAsync();
        double[] tickTimes = ticks.ToArray();
        double[] lateness = oneShotDue.Select((due, i) => oneShotFired[i] - (scheduledAt + due)).ToArray();
        int ticksInStorm = tickTimes.Count(t => t <= stormEnded);
        double expectedTicks = (stormEnded - scheduledAt) / 10.0;
        _output.WriteLine($"{stormMs} ms of storm: {sent:N0} SIGURG sent to the loop thread with tgkill, more to the process by a bash kill loop; the handler ran {Volatile.Read(ref s_handled) - handledBefore:N0} times (pending signals coalesce)");
        _output.WriteLine($"echo round trips during the storm: {roundTripsDuring:N0}; one-shot timers late by {lateness.Min():F1} to {lateness.Max():F1} ms; repeating 10 ms timer: {ticksInStorm} ticks while {expectedTicks:F0} periods passed");
        Assert.True(sent > 1000, $"only {sent} signals sent");
        Assert.True(Resources.Eventually(() => Volatile.Read(ref s_handled) > handledBefore, 10), "no signal was handled");
        Assert.True(roundTripsDuring > 0, "no echo went through during the storm");
        Assert.All(lateness, l => Assert.InRange(l, -0.5, 500));
        Assert.InRange(ticksInStorm, expectedTicks * 0.3, expectedTicks + 1);
        server.AssertNoLoopErrors();
        Assert.False(server.Harness.Completion.IsCompleted);
    }
}
