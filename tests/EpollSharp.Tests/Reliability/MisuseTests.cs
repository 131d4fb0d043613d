using System.Diagnostics;
using System.IO;
using System.IO.Pipes;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Bad input and misuse of the loop: each gets an exception that names the argument or the state that was wrong, or a
/// result written in docs/reliability.md; never a hang, a crash or silent loss. What Conformance.RegistrationTests
/// (Misuse_gets_clear_exceptions, A_regular_file_cannot_be_registered) and Conformance.LoopTests already check is not
/// repeated here.
/// </summary>
public class MisuseTests
{
    private static readonly ReadinessCallback Ignore = static (_, _) => { };

    private readonly ITestOutputHelper _output;

    public MisuseTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Null_arguments_are_refused_with_their_names(EventLoopBackend backend)
    {
        using var loop = Backends.CreateLoop(backend);
        using var pair = SocketPair.Create();
        using var handle = new SafeFileHandle(pair.Local.Handle, ownsHandle: false);
        Assert.Equal("handle", Assert.Throws<ArgumentNullException>(() => loop.RegisterHandle(null!, Interest.Readable, Ignore)).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loop.RegisterHandle(handle, Interest.Readable, null!)).ParamName);
        Assert.Equal("action", Assert.Throws<ArgumentNullException>(() => loop.Post((Action)null!)).ParamName);
        Assert.Equal("action", Assert.Throws<ArgumentNullException>(() => loop.Post(null!, 1)).ParamName);
        Assert.Equal("action", Assert.Throws<ArgumentNullException>(() => loop.TryPost(null!, 1)).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loop.Schedule(TimeSpan.Zero, null!)).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loop.ScheduleRepeating(TimeSpan.Zero, TimeSpan.FromSeconds(1), null!)).ParamName);

        var handler = new EpollSharp.Tests.Connections.EchoHandler();
        var endPoint = new IPEndPoint(IPAddress.Loopback, 0);
        Assert.Equal("loop", Assert.Throws<ArgumentNullException>(() => ConnectionListener.Listen(null!, endPoint, handler)).ParamName);
        Assert.Equal("endPoint", Assert.Throws<ArgumentNullException>(() => ConnectionListener.Listen(loop, null!, handler)).ParamName);
        Assert.Equal("handler", Assert.Throws<ArgumentNullException>(() => ConnectionListener.Listen(loop, endPoint, null!)).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentNullException>(() => new ListenerOptions { Connection = null! }).ParamName);
        Assert.Equal(0, loop.RegistrationCount);
    }

    /// <summary>
    /// A closed handle is refused (ObjectDisposedException), an invalid one too (ArgumentException naming "handle"). Sockets
    /// that are open but unusable are in <see cref="A_socket_shut_down_both_ways_reports_a_hang_up_once"/> and
    /// <see cref="A_never_connected_socket_reports_a_hang_up_once"/>.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Closed_and_invalid_handles_are_refused(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var closed = new SafeFileHandle(new IntPtr(0), ownsHandle: false);
        closed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => h.Loop.RegisterHandle(closed, Interest.Readable, Ignore));
        using var invalid = new SafeFileHandle(new IntPtr(-1), ownsHandle: false);
        Assert.Equal("handle", Assert.Throws<ArgumentException>(() => h.Loop.RegisterHandle(invalid, Interest.Readable, Ignore)).ParamName);
        Assert.Equal(0, h.Invoke(() => h.Loop.RegistrationCount));
    }

    /// <summary>
    /// A connected socket shut down both ways, registered with empty interest, is told Closed once (documented: Closed
    /// cannot be switched off, and is not repeated by a level-triggered registration). kqueue cannot show it: it has no
    /// flag for "both directions are closed", and the backend reports Closed only with an error (docs/backends-kqueue.md);
    /// the read filter's EV_EOF without an error is an end of stream (ReadClosed), which an empty interest does not get.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_socket_shut_down_both_ways_reports_a_hang_up_once(EventLoopBackend backend)
    {
        Skip.If(
            backend == EventLoopBackend.Kqueue,
            "kqueue has no hang-up for a socket shut down both ways: it has no flag for both directions closed, the backend "
            + "reports Closed only with an error, and EV_EOF without one is an end of stream; see docs/backends-kqueue.md.");
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var pair = SocketPair.Create();
        pair.Local.Shutdown(SocketShutdown.Both);
        var calls = new ConcurrentQueue<Readiness>();
        Registration b = h.Invoke(() => h.Loop.Register(pair.Local, Interest.None, (_, r) => calls.Enqueue(r)));
        h.Settle(iterations: 5, sleepMs: 200);
        int early = calls.Count;
        h.Settle(iterations: 5, sleepMs: 200);
        _output.WriteLine(string.Join(", ", calls));

        // Reported once, and then not again: the loop latches the hang-up, and drops the report that re-arming the
        // registration as edge-triggered brings (a condition that still holds) and the one for the peer's answer to the FIN.
        Assert.Equal(early, calls.Count);
        Assert.Single(calls);
        Assert.All(calls, r => Assert.True((r & Readiness.Closed) != 0));
        h.Invoke(b.Dispose);
    }

    /// <summary>
    /// A TCP socket that was never connected, registered with empty interest: epoll reports a hang-up (Linux's poll says
    /// POLLHUP for a closed TCP socket), once. kqueue cannot show it: on macOS and FreeBSD neither filter fires for a
    /// connection-oriented socket that is not connected (no EOF, no error, no data, and the write filter waits for the
    /// connection), and libkqueue reports EV_EOF on the read filter without an error, which is an end of stream
    /// (ReadClosed), not a hang-up; see docs/backends-kqueue.md. The managed backend sees a socket only through
    /// Select/Poll, which report nothing for it either (docs/backends-managed.md).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_never_connected_socket_reports_a_hang_up_once(EventLoopBackend backend)
    {
        Skip.If(
            backend == EventLoopBackend.Kqueue,
            "kqueue has no hang-up for a TCP socket that was never connected: on macOS and FreeBSD neither filter fires for it, "
            + "and libkqueue reports only EV_EOF without an error on the read filter (an end of stream); see docs/backends-kqueue.md.");
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var unconnected = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        var calls = new ConcurrentQueue<Readiness>();
        Registration a = h.Invoke(() => h.Loop.Register(unconnected, Interest.None, (_, r) => calls.Enqueue(r)));
        h.Settle(iterations: 5, sleepMs: 200);
        int early = calls.Count;
        h.Settle(iterations: 5, sleepMs: 200);
        _output.WriteLine(string.Join(", ", calls));
        Assert.Equal(early, calls.Count);

        // The managed backend sees a socket only through Select/Poll, which report nothing for a socket that was never
        // connected: documented in docs/backends-managed.md.
        Assert.InRange(calls.Count, backend == EventLoopBackend.Managed ? 0 : 1, 1);
        Assert.All(calls, r => Assert.True((r & Readiness.Closed) != 0));
        h.Invoke(a.Dispose);
    }

    /// <summary>
    /// Descriptors that are not sockets: ones epoll cannot watch (a character device without poll support such as /dev/null;
    /// regular files are in Conformance) are refused with ArgumentException naming "handle"; ones it can (a pipe, an eventfd)
    /// work through RegisterHandle. The loop is unharmed either way.
    /// </summary>
    [SkippableFact]
    public void Descriptors_that_are_not_sockets()
    {
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);
        using var h = new LoopHarness(Backends.CreateLoop(EventLoopBackend.Epoll));
        using (SafeFileHandle devNull = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Read))
        {
            var refused = Assert.Throws<ArgumentException>(() => h.Loop.RegisterHandle(devNull, Interest.Readable, Ignore));
            Assert.Equal("handle", refused.ParamName);
            _output.WriteLine("/dev/null: " + refused.Message);
        }

        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        using SafePipeHandle reader = pipe.ClientSafePipeHandle;
        using var readable = new ManualResetEventSlim();
        Registration registration = h.Invoke(() => h.Loop.RegisterHandle(reader, Interest.Readable, (r, readiness) =>
        {
            readable.Set();
            r.ChangeInterest(Interest.None);
        }));
        pipe.WriteByte(1);
        Assert.True(readable.Wait(TimeSpan.FromSeconds(10)), "a pipe registered with RegisterHandle reports Readable");
        h.Invoke(registration.Dispose);
        Assert.Equal(0, h.Invoke(() => h.Loop.RegistrationCount));
    }

    /// <summary>
    /// Timeouts: negative ones are refused with the parameter's name; ones too long to represent (TimeSpan.MaxValue) too; long
    /// but representable ones (months, decades) are accepted, and a loop whose earliest timer is months away keeps running,
    /// sleeps without spinning, and fires nearer timers on time.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Negative_and_enormous_timer_times(EventLoopBackend backend)
    {
        var errors = new ConcurrentQueue<Exception>();
        using var h = new LoopHarness(Backends.CreateLoop(backend, onError: errors.Enqueue));
        Assert.Equal("dueTime", Assert.Throws<ArgumentOutOfRangeException>(() => h.Loop.Schedule(TimeSpan.FromTicks(-1), _ => { })).ParamName);
        Assert.Equal("dueTime", Assert.Throws<ArgumentOutOfRangeException>(() => h.Loop.Schedule(TimeSpan.MaxValue, _ => { })).ParamName);
        Assert.Equal("dueTime", Assert.Throws<ArgumentOutOfRangeException>(() => h.Loop.ScheduleRepeating(TimeSpan.MinValue, TimeSpan.FromSeconds(1), _ => { })).ParamName);
        Assert.Equal("period", Assert.Throws<ArgumentOutOfRangeException>(() => h.Loop.ScheduleRepeating(TimeSpan.Zero, TimeSpan.FromTicks(-1), _ => { })).ParamName);
        Assert.Equal("period", Assert.Throws<ArgumentOutOfRangeException>(() => h.Loop.ScheduleRepeating(TimeSpan.Zero, TimeSpan.MaxValue, _ => { })).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentOutOfRangeException>(() => new EventLoopOptions { MaxEventsPerWait = 0 }).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentOutOfRangeException>(() => new EventLoopOptions { MaxEventsPerWait = int.MaxValue }).ParamName);

        int farFired = 0;
        LoopTimer far = h.Loop.Schedule(TimeSpan.FromDays(1), _ => Interlocked.Increment(ref farFired));
        Assert.Equal("dueTime", Assert.Throws<ArgumentOutOfRangeException>(() => far.Change(TimeSpan.FromTicks(-1))).ParamName);
        int loopThread = h.Invoke(ReliabilityLibc.gettid);
        foreach (TimeSpan due in new[] { TimeSpan.FromDays(107), TimeSpan.FromDays(120), TimeSpan.FromDays(200), TimeSpan.FromDays(365), TimeSpan.FromDays(1000), TimeSpan.FromDays(365 * 50) })
        {
            // Only the far timer is scheduled: the loop's wait timeout comes from it.
            far.Change(due);
            h.Settle(iterations: 2, sleepMs: 20);
            TimeSpan cpuBefore = ThreadCpu(loopThread);
            Thread.Sleep(300);
            TimeSpan cpu = ThreadCpu(loopThread) - cpuBefore;
            Assert.False(h.Completion.IsCompleted, $"the loop stopped with a timer due in {due.TotalDays} days: {h.Completion.Exception?.InnerException}");
            Assert.True(cpu < TimeSpan.FromMilliseconds(100), $"the loop thread used {cpu.TotalMilliseconds} ms of CPU in 300 ms with a timer due in {due.TotalDays} days");
            var sw = Stopwatch.StartNew();
            using var near = new ManualResetEventSlim();
            h.Loop.Schedule(TimeSpan.FromMilliseconds(20), _ => near.Set());
            Assert.True(near.Wait(TimeSpan.FromSeconds(10)), $"a 20 ms timer did not fire with another due in {due.TotalDays} days");
            Assert.True(sw.ElapsedMilliseconds >= 20);
            Assert.True(far.IsActive);
        }

        Assert.Equal(0, Volatile.Read(ref farFired));
        Assert.Empty(errors);
    }

    /// <summary>Empty interest: nothing is reported for data, a hang-up once; giving it an interest again reports the data.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Empty_interest_reports_only_hang_ups(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var pair = SocketPair.Create();
        var calls = new ConcurrentQueue<Readiness>();
        Registration registration = h.Invoke(() => h.Loop.Register(pair.Local, Interest.None, (_, r) => calls.Enqueue(r)));
        pair.Peer.Send(new byte[] { 1, 2, 3 });
        h.Settle(iterations: 5, sleepMs: 100);
        Assert.Empty(calls);

        h.Invoke(() => registration.ChangeInterest(Interest.Readable));
        LoopHarness.WaitUntil(() => calls.Count >= 1, "Readable once there is an interest");
        h.Invoke(() => registration.ChangeInterest(Interest.None));
        pair.Drain();
        h.Settle();
        int before = calls.Count;
        pair.Peer.Shutdown(SocketShutdown.Both);
        pair.Peer.Close();
        h.Settle(iterations: 10, sleepMs: 200);
        Readiness[] after = calls.ToArray()[before..];
        _output.WriteLine("after the peer closed: " + string.Join(", ", after));
        Assert.True(after.Length <= 1, "a hang-up with empty interest is reported at most once: " + string.Join(", ", after));
        h.Invoke(registration.Dispose);
    }

    /// <summary>
    /// Run and Start from a callback, and from another thread while the loop runs, are refused with
    /// InvalidOperationException naming the state; the loop goes on serving. Run or Start after Dispose:
    /// ObjectDisposedException. Dispose from a callback, then Run: ObjectDisposedException.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Run_and_Start_re_entrant_from_callbacks_and_other_threads(EventLoopBackend backend)
    {
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var pair = SocketPair.Create();
        var refusals = new ConcurrentQueue<Exception?>();
        using var timerDone = new ManualResetEventSlim();
        h.Loop.Schedule(TimeSpan.FromMilliseconds(1), _ =>
        {
            refusals.Enqueue(Record.Exception(() => h.Loop.Run()));
            refusals.Enqueue(Record.Exception(() => { h.Loop.Start(); }));
            timerDone.Set();
        });
        Assert.True(timerDone.Wait(TimeSpan.FromSeconds(10)));
        using var readyDone = new ManualResetEventSlim();
        Registration registration = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, _) =>
        {
            pair.Drain();
            refusals.Enqueue(Record.Exception(() => r.Loop.Run()));
            readyDone.Set();
        }));
        pair.Peer.Send(new byte[] { 1 });
        Assert.True(readyDone.Wait(TimeSpan.FromSeconds(10)));
        refusals.Enqueue(Record.Exception(() => h.Loop.Run()));
        refusals.Enqueue(Record.Exception(() => { h.Loop.Start(); }));
        foreach (Exception? e in refusals)
        {
            var refused = Assert.IsType<InvalidOperationException>(e);
            _output.WriteLine(refused.Message);
            Assert.True(refused.Message.Contains("re-entrant", StringComparison.Ordinal) || refused.Message.Contains("already running", StringComparison.Ordinal), refused.Message);
        }

        // Still serving.
        Assert.True(h.Invoke(() => h.Loop.IsOnLoopThread));
        h.Invoke(registration.Dispose);

        var loop = Backends.CreateLoop(backend);
        loop.Post(loop.Dispose);
        loop.Run();
        Assert.Equal(nameof(EventLoop), Assert.Throws<ObjectDisposedException>(() => loop.Run()).ObjectName);
        Assert.IsType<ObjectDisposedException>(Record.Exception(() => { loop.Start(); }));
        loop.Stop();
        loop.Dispose();
    }

    /// <summary>
    /// The same socket registered on two loops: allowed (epoll keeps one watch per instance; a listening socket shared by
    /// several loops is a legitimate use), both loops are told, on their own threads, and disposing one registration leaves
    /// the other watching. Reading the same data socket from two threads is the caller's race to avoid (docs/reliability.md).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_same_socket_on_two_loops_is_reported_on_both(EventLoopBackend backend)
    {
        using var a = new LoopHarness(Backends.CreateLoop(backend));
        using var b = new LoopHarness(Backends.CreateLoop(backend));
        using var pair = SocketPair.Create();
        int onA = 0, onB = 0, offThread = 0;
        ReadinessCallback count = (r, _) =>
        {
            if (!r.Loop.IsOnLoopThread)
            {
                Interlocked.Increment(ref offThread);
            }

            Interlocked.Increment(ref r.Loop == a.Loop ? ref onA : ref onB);
            r.ChangeInterest(Interest.None);
        };
        Registration ra = a.Invoke(() => a.Loop.Register(pair.Local, Interest.Readable, count));
        Registration rb = b.Invoke(() => b.Loop.Register(pair.Local, Interest.Readable, count));
        pair.Peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref onA) == 1 && Volatile.Read(ref onB) == 1, "both loops report the readable socket");
        a.Invoke(ra.Dispose);
        b.Invoke(() => rb.ChangeInterest(Interest.Readable));
        LoopHarness.WaitUntil(() => Volatile.Read(ref onB) == 2, "the second loop still watches after the first let go");
        Assert.Equal(1, Volatile.Read(ref onA));
        Assert.Equal(0, Volatile.Read(ref offThread));
        b.Invoke(rb.Dispose);
        Assert.Equal(1, pair.Drain());
    }

    /// <summary>User + system CPU time of one thread of this process, from /proc/self/task/TID/stat (clock ticks of 10 ms).</summary>
    internal static TimeSpan ThreadCpu(int tid)
    {
        string stat = File.ReadAllText($"/proc/self/task/{tid}/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture);
        return TimeSpan.FromMilliseconds(ticks * 10.0);
    }
}
