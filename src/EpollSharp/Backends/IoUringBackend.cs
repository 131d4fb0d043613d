using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Threading;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// The Linux io_uring backend, readiness only: every registration is a poll request on one ring
/// (<c>IORING_OP_POLL_ADD</c>), and <see cref="Wait"/> reaps the completion queue.
/// </summary>
/// <remarks>
/// <para>How each trigger mode is emulated:</para>
/// <list type="bullet">
/// <item><see cref="TriggerMode.Level"/>: a single-shot poll. When it completes, the event is delivered and the poll is
///   re-armed at the start of the next <see cref="Wait"/>, after the callbacks ran: the kernel checks readiness when a poll
///   is armed, so a target that is still ready completes again at once, and one that was drained does not.</item>
/// <item><see cref="TriggerMode.Edge"/>: a multishot poll (<c>IORING_POLL_ADD_MULTI</c>), which the kernel runs
///   edge-triggered: one completion when armed on a ready target, then one per wake-up of the target (new data, new room),
///   as <c>EPOLLET</c> does. When the kernel ends it (a completion without <c>IORING_CQE_F_MORE</c>), it is re-armed at the
///   next wait.</item>
/// <item><see cref="TriggerMode.OneShot"/>: a single-shot poll that is not re-armed; <see cref="Modify"/> arms a new one.</item>
/// </list>
/// <para><see cref="Modify"/> cancels the current poll (<c>IORING_OP_ASYNC_CANCEL</c>) and arms a new one, so a changed
/// interest is checked against the target's state (as <c>EPOLL_CTL_MOD</c> does). <see cref="Add"/> and Modify arm at
/// once while another thread waits; called between waits (from a callback, typically), they arm at the start of the next
/// wait, because a completion is a snapshot that the wait does not check again, and one taken before a callback drains
/// the target would report a readiness that is gone. <see cref="Remove"/> removes
/// the poll. Each registration has a slot and a generation that changes with every Modify and Remove; both are in the
/// request's user data, and a completion whose generation is not the slot's current one is dropped, so a poll that
/// completed before its removal was seen is never reported, neither to the removed registration nor to a later one that
/// reuses the slot.</para>
/// <para><see cref="Wake"/> submits a no-op (<c>IORING_OP_NOP</c>) whose completion ends the wait (on a ring bound to
/// the loop's thread: writes an eventfd that the ring polls); a flag coalesces wake-ups until the wait reaps it.
/// Submissions come from any thread under one lock, and are entered at once, so an Add, Modify or Remove takes effect
/// while another thread waits; on a ring bound to the loop's thread (<see cref="IssuerBound"/>,
/// <c>IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN</c>, Linux 6.1 and later), only that thread submits, and
/// another thread's Add, Modify and Remove are queued for it and wake it (see <see cref="MoveToThisThread"/> and
/// <see cref="RunEnded"/> for a loop that changes threads, and docs/backends-io_uring.md). The wait is <c>io_uring_enter</c> with
/// <c>IORING_ENTER_GETEVENTS</c> and, for a finite timeout, <c>IORING_ENTER_EXT_ARG</c> with a timespec; on an
/// issuer-bound ring with Linux 6.12's min-wait, a wait with many operations in flight batches (see
/// <see cref="BatchingWaits"/>).</para>
/// <para>A poll holds a reference on the file. A handle closed without Remove (which the loop tolerates: epoll forgets
/// the descriptor with its last close) therefore stays open in the kernel until the backend notices: at its next
/// completion, when a wait's sweep (a few registrations per wait, in turn) finds the handle closed, or when the backend
/// is disposed. Remove and Dispose wait for the removed polls to complete, so that the files are let go when they return.</para>
/// <para>Unlike epoll, a poll accepts a regular file (which is always ready) rather than refusing it.</para>
/// </remarks>
internal sealed unsafe partial class IoUringBackend : IPollBackend, ICompletionIo, ILoopRunAware
{
    /// <summary>The user data of the wake-up no-op.</summary>
    private const ulong WakeUserData = ulong.MaxValue;

    /// <summary>The user data of poll removals, whose completions are dropped.</summary>
    private const ulong RemovalUserData = ulong.MaxValue - 1;

    private const uint SqEntries = 256;

    /// <summary>How many registrations each wait checks for a handle closed without Remove.</summary>
    private const int SweepPerWait = 4;

    private static readonly object s_availabilityLock = new();
    private static string? s_unavailableReason;

    /// <summary>The setup flags that bind the ring to one thread (see <see cref="IssuerBound"/>).</summary>
    private const uint IssuerFlags = Interop.IoUring.IORING_SETUP_SINGLE_ISSUER | Interop.IoUring.IORING_SETUP_DEFER_TASKRUN | Interop.IoUring.IORING_SETUP_R_DISABLED;

    private static readonly string? s_singleIssuerSwitch = Environment.GetEnvironmentVariable("EPOLLSHARP_IO_URING_SINGLE_ISSUER");

    /// <summary>
    /// The least min-wait of a batching wait that follows the arrival rate (see <see cref="AdaptiveMinWait"/>), which is
    /// used unless <c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c> is a number; also what <see cref="ParseMinWait"/> gives otherwise.
    /// </summary>
    internal const uint DefaultMinWaitMicroseconds = 50;

    /// <summary>The longest min-wait <c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c> may ask for (a millisecond).</summary>
    internal const uint MaxMinWaitMicroseconds = 1000;

    /// <summary>Below this many receives, sends and accepts in flight, a wait returns at the first completion, as before.</summary>
    internal const int MinWaitInFlight = 16;

    /// <summary>
    /// A wait batches only after one that found at least this many receives, accepts or readiness events: a lone request
    /// on a quiet loop (its receive, then its send) is served without waiting for company.
    /// </summary>
    internal const uint MinWaitBusy = 2;

    /// <summary>A batching wait with no deadline still passes one (the kernel ends a min-wait with no timeout at the min-wait); an hour.</summary>
    private const long MinWaitNoDeadlineSeconds = 3600;

    /// <summary>
    /// <c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c>, read once: the min-wait in microseconds (0 switches batching waits off), and
    /// whether the variable names one (a number), which is then used as it is instead of the one that follows the arrival
    /// rate (see <see cref="AdaptiveMinWait"/>).
    /// </summary>
    private static readonly (uint Microseconds, bool Fixed) s_minWaitSetting =
        ParseMinWait(Environment.GetEnvironmentVariable("EPOLLSHARP_IO_URING_MIN_WAIT_US"));

    /// <summary>
    /// A min-wait that follows the arrival rate lasts at least as long as this many receives, accepts or readiness events
    /// take to arrive (see <see cref="AdaptiveMinWait"/>).
    /// </summary>
    internal const uint AdaptiveArrivals = 8;

    /// <summary>
    /// A min-wait that follows the arrival rate lasts this many times as long as the arrivals its wait asks for take at the
    /// average rate: the wait ends as soon as they are in, and arrivals come in bursts, so a min-wait of the average
    /// alone would cut about half of the batches short (see <see cref="AdaptiveMinWait"/>).
    /// </summary>
    internal const uint AdaptiveSlack = 2;

    /// <summary>The longest min-wait that follows the arrival rate, in microseconds.</summary>
    internal const uint AdaptiveMaxMinWaitMicroseconds = 250;

    /// <summary>A zero <c>__kernel_timespec</c> for the wake-up's linked timeout, read by the kernel when it is submitted.</summary>
    private static readonly Interop.KernelTimespec* s_zeroTimespec = AllocateZeroTimespec();

    private readonly object _lock = new();
    private readonly uint _cqEntries;
    private readonly uint _extraSetupFlags;

    /// <summary>The ring: replaced when a loop bound to one thread runs again on another (<see cref="MoveToThisThread"/>).</summary>
    private IoUringRing _ring;

    /// <summary>Set up with <c>IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN</c>: only <see cref="_issuer"/> submits and waits.</summary>
    private readonly bool _issuerBound;

    /// <summary>
    /// The token (<see cref="ThisThread"/>) of the thread the ring was enabled for (its first wait); null while not
    /// enabled. Under the lock. A token rather than a thread id, which a later thread may get again.
    /// </summary>
    private object? _issuer;

    [ThreadStatic]
    private static object? t_threadToken;

    /// <summary>With <see cref="_issuerBound"/>: the eventfd that <see cref="Wake"/> writes and the ring polls (multishot).</summary>
    private readonly int _wakeFd = -1;
    private bool _wakeArmed;

    /// <summary>
    /// Batching waits are on (issuer-bound ring, Linux 6.12's <c>IORING_FEAT_MIN_TIMEOUT</c>, not switched off): the
    /// eventfd is then polled by a single-shot, non-lazy poll linked to a zero timeout, whose expiry ends a batching wait
    /// at once (see <see cref="ArmWake"/>).
    /// </summary>
    private readonly bool _batchingWaits;

    /// <summary>The min-wait of a batching wait, in microseconds (see <see cref="MinWaitMicroseconds"/>).</summary>
    private uint _minWaitUsec;

    /// <summary>Tests: the completions a batching wait asks for, whatever is in flight; 0: from what is in flight.</summary>
    private uint _minCompleteOverride;

    /// <summary>
    /// The min-wait follows the arrival rate (batching waits on, <c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c> unset, and
    /// <see cref="MinWaitMicroseconds"/> not set by a test). Issuer thread.
    /// </summary>
    private bool _minWaitAdaptive;

    /// <summary>When the last reap that found arrivals ended (<see cref="Stopwatch.GetTimestamp"/>); 0 before the first. Issuer thread.</summary>
    private long _lastArrivalReap;

    /// <summary>A moving average of the time between arrivals, in <see cref="Stopwatch"/> ticks; 0 before the first. Issuer thread.</summary>
    private double _ticksPerArrival;

    /// <summary>
    /// The receives, accepts and readiness events the last wait found (under the lock): fewer than
    /// <see cref="MinWaitBusy"/>, the next wait does not batch.
    /// </summary>
    private uint _lastArrivals;

    /// <summary>
    /// The most arrivals a batching wait asks for besides its submissions' completions (it also asks for no more than a
    /// quarter of what is in flight); see <see cref="FollowBatch"/>. Issuer thread.
    /// </summary>
    private uint _arrivalsToAsk = uint.MaxValue;

    /// <summary>Cancellations asked for by other threads (issuer-bound ring): written by the issuer at its next wait.</summary>
    private DeferredCancel[] _deferredCancels = new DeferredCancel[16];
    private int _deferredCancelCount;

    /// <summary>Waits started, for <see cref="AwaitRelease"/> to tell a running loop from a stopped one.</summary>
    private int _waitStarts;

    /// <summary>How many times the ring was set up again for a new loop thread.</summary>
    private int _moves;
    private readonly Dictionary<int, Entry> _byDescriptor = new();

    /// <summary>User data of removed polls whose final completion a Remove or Dispose waits for; true once reaped.</summary>
    private readonly Dictionary<ulong, bool> _releases = new();
    private Entry?[] _slots = new Entry?[64];
    private uint[] _generations = new uint[64];
    private int[] _freeSlots = new int[64];
    private int _freeCount;
    private int _slotsUsed;
    private int _sweepCursor;
    private Entry[] _rearm = new Entry[64];
    private int _rearmCount;
    private int _wakePending;
    private bool _disposed;

    /// <summary>Between the start of a wait's system call and the reaping of its completions (under the lock).</summary>
    private bool _inWait;

    public IoUringBackend(int maxEvents)
        : this(maxEvents, 0)
    {
    }

    /// <summary>Creates the backend with <paramref name="extraSetupFlags"/> added to the ring's setup flags (tests pass an invalid one).</summary>
    /// <exception cref="PlatformNotSupportedException">io_uring cannot be set up in this process; the message says why.</exception>
    internal IoUringBackend(int maxEvents, uint extraSetupFlags)
        : this(maxEvents, extraSetupFlags, CompletionsByDefault)
    {
    }

    /// <summary>
    /// Creates the backend; with <paramref name="completions"/>, also the completion path for the connection layer
    /// (<see cref="ICompletionIo"/>) when the kernel has what it needs.
    /// </summary>
    /// <exception cref="PlatformNotSupportedException">io_uring cannot be set up in this process; the message says why.</exception>
    internal IoUringBackend(int maxEvents, uint extraSetupFlags, bool completions)
    {
        // Room for the completion path's bursts too: a multishot receive posts one completion per provided buffer, and one
        // that cannot post (the ring full) ends, to be armed again.
        _cqEntries = (uint)Math.Max(BufferCount * 4, Math.Min(maxEvents, 1 << 16) * 4);
        _extraSetupFlags = extraSetupFlags;
        IoUringRing? ring = null;
        if (SingleIssuerSwitchedOn)
        {
            // Linux 6.1 and later. An older kernel refuses the flags (EINVAL): the ring is then set up as before.
            _wakeFd = Interop.Sys.eventfd(0, Interop.Sys.EFD_NONBLOCK | Interop.Sys.EFD_CLOEXEC);
            if (_wakeFd >= 0)
            {
                if (IoUringRing.TryCreate(SqEntries, _cqEntries, extraSetupFlags | IssuerFlags, out ring, out _, out _))
                {
                    _issuerBound = true;
                }
                else
                {
                    Interop.Sys.close(_wakeFd);
                    _wakeFd = -1;
                }
            }
        }

        if (ring is null && !IoUringRing.TryCreate(SqEntries, _cqEntries, extraSetupFlags, out ring, out string reason, out int setupErrno))
        {
            // Out of descriptors is no lack of support: the same exception as epoll_create1 gives then.
            throw setupErrno is Interop.Errno.EMFILE or Interop.Errno.ENFILE
                ? ErrnoNames.Create("io_uring_setup", setupErrno)
                : new PlatformNotSupportedException("The io_uring backend is not available: " + reason);
        }

        _ring = ring!;
        _batchingWaits = _issuerBound && s_minWaitSetting.Microseconds > 0 && (_ring.Features & Interop.IoUring.IORING_FEAT_MIN_TIMEOUT) != 0;
        _minWaitUsec = _batchingWaits ? s_minWaitSetting.Microseconds : 0;
        _minWaitAdaptive = _batchingWaits && !s_minWaitSetting.Fixed;
        SetUpCompletions(completions);
    }

    /// <summary>
    /// Whether a wait may batch: with many operations in flight, it asks the kernel for several completions and waits at
    /// most <see cref="MinWaitMicroseconds"/> for them (<c>IORING_ENTER_EXT_ARG</c> with <c>min_wait_usec</c>), then
    /// returns with whatever arrived, or at the first one after. A timer's deadline and a wake-up end it at once.
    /// </summary>
    internal bool BatchingWaits => _batchingWaits;

    /// <summary>
    /// The min-wait of a batching wait in microseconds (<c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c>, default
    /// <see cref="DefaultMinWaitMicroseconds"/>); tests set it, up to a few seconds, on a backend with <see cref="BatchingWaits"/>.
    /// </summary>
    internal uint MinWaitMicroseconds
    {
        get => Volatile.Read(ref _minWaitUsec);
        set
        {
            if (!_batchingWaits)
            {
                throw new InvalidOperationException("This backend does not make batching waits.");
            }

            Volatile.Write(ref _minWaitUsec, value);
            _minWaitAdaptive = false;
        }
    }

    /// <summary>Whether the min-wait follows the arrival rate (see <see cref="AdaptiveMinWait"/>). Issuer thread.</summary>
    internal bool MinWaitAdaptive => _minWaitAdaptive;

    /// <summary>
    /// The min-wait a batching wait that asks for the fewest arrivals (<see cref="AdaptiveArrivals"/>) passes, in
    /// microseconds: <see cref="MinWaitMicroseconds"/> when it is fixed, or the one that follows the arrival rate
    /// (<see cref="AdaptiveMinWait"/>). Issuer thread.
    /// </summary>
    internal uint EffectiveMinWaitMicroseconds => EffectiveMinWait(0);

    /// <summary>
    /// The min-wait of a batching wait that asks for <paramref name="arrivals"/> arrivals besides its submissions'
    /// completions: <see cref="MinWaitMicroseconds"/> when it is fixed, or <see cref="AdaptiveMinWait"/>. Issuer thread.
    /// </summary>
    private uint EffectiveMinWait(uint arrivals) =>
        _minWaitAdaptive ? AdaptiveMinWait(_ticksPerArrival, arrivals, Stopwatch.Frequency) : Volatile.Read(ref _minWaitUsec);

    /// <summary>
    /// The min-wait that follows the arrival rate: the time that <see cref="AdaptiveSlack"/> times
    /// <paramref name="arrivals"/> arrivals, and at least <see cref="AdaptiveArrivals"/>, take at
    /// <paramref name="ticksPerArrival"/> (<paramref name="frequency"/> ticks a second); at least
    /// <see cref="DefaultMinWaitMicroseconds"/> and at most <see cref="AdaptiveMaxMinWaitMicroseconds"/>. The wait ends as
    /// soon as the completions it asked for are in, so the min-wait only bounds a batch that fills slowly; one shorter
    /// than the batch takes to fill would end most waits with part of it, each wait a system call and a sleep (a slow
    /// stream of large messages, paced by a peer that copies them; or many connections, whose wait asks for a quarter of
    /// them). The cap bounds the latency a batch adds.
    /// </summary>
    internal static uint AdaptiveMinWait(double ticksPerArrival, uint arrivals, long frequency)
    {
        double us = ticksPerArrival * Math.Max((double)arrivals * AdaptiveSlack, AdaptiveArrivals) * 1_000_000.0 / frequency;
        return us <= DefaultMinWaitMicroseconds ? DefaultMinWaitMicroseconds
            : us >= AdaptiveMaxMinWaitMicroseconds ? AdaptiveMaxMinWaitMicroseconds
            : (uint)us;
    }

    /// <summary>
    /// Folds the arrivals of a reap into the moving average of the time between arrivals (an eighth of each new sample).
    /// A sample is the time since the last reap with arrivals over the arrivals; one of more than the longest adaptive
    /// min-wait per arrival (a loop that was idle) counts as that, so a pause does not hold the min-wait up for long.
    /// </summary>
    internal static double FoldArrivals(double ticksPerArrival, long elapsedTicks, uint arrivals, long frequency)
    {
        double sample = elapsedTicks / (double)arrivals;
        double cap = AdaptiveMaxMinWaitMicroseconds * (double)frequency / 1_000_000.0;
        sample = Math.Min(sample, cap);
        return ticksPerArrival == 0 ? sample : ticksPerArrival + ((sample - ticksPerArrival) / 8);
    }

    /// <summary>Tests: the completions every batching wait asks for, whatever is in flight (0: from what is in flight).</summary>
    internal uint MinCompleteOverride
    {
        get => Volatile.Read(ref _minCompleteOverride);
        set => Volatile.Write(ref _minCompleteOverride, value);
    }

    /// <summary>
    /// Parses <c>EPOLLSHARP_IO_URING_MIN_WAIT_US</c>: a number is a fixed min-wait, clamped to
    /// <see cref="MaxMinWaitMicroseconds"/>; unset or not a number gives the default, not fixed.
    /// </summary>
    internal static (uint Microseconds, bool Fixed) ParseMinWait(string? value) =>
        uint.TryParse(value?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out uint us)
            ? (Math.Min(us, MaxMinWaitMicroseconds), true)
            : (DefaultMinWaitMicroseconds, false);

    private static Interop.KernelTimespec* AllocateZeroTimespec()
    {
        var ts = (Interop.KernelTimespec*)System.Runtime.InteropServices.Marshal.AllocHGlobal(sizeof(Interop.KernelTimespec));
        *ts = default;
        return ts;
    }

    public EventLoopBackend Kind => EventLoopBackend.IoUring;

    /// <summary>
    /// Whether the ring is bound to the loop's thread (<c>IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN</c>):
    /// completions are then posted while that thread waits, in batches, instead of interrupting it.
    /// </summary>
    internal bool IssuerBound => _issuerBound;

    /// <summary>How many times the ring was set up again because the loop ran on another thread.</summary>
    internal int RingMoves => Volatile.Read(ref _moves);

    /// <summary>
    /// Whether <c>EPOLLSHARP_IO_URING_SINGLE_ISSUER</c> leaves the issuer-bound setup on (the default; "0", "false",
    /// "off" switch it off).
    /// </summary>
    internal static bool SingleIssuerSwitchedOn =>
        s_singleIssuerSwitch is null || !(s_singleIssuerSwitch.Trim() == "0"
            || string.Equals(s_singleIssuerSwitch.Trim(), "false", StringComparison.OrdinalIgnoreCase)
            || string.Equals(s_singleIssuerSwitch.Trim(), "off", StringComparison.OrdinalIgnoreCase));

    /// <summary>Whether the calling thread may submit to the ring and wait on it. Under the lock.</summary>
    private bool CanSubmitHere => !_issuerBound || _issuer == ThisThread;

    /// <summary>An object of the calling thread's own, for as long as the thread lives.</summary>
    private static object ThisThread => t_threadToken ??= new object();

    /// <summary>
    /// Whether io_uring can be used in this process (a ring is set up once to find out, and the answer kept); when
    /// not, why: the kernel lacks it (ENOSYS), it is disabled (EPERM, EACCES: <c>kernel.io_uring_disabled</c>,
    /// <c>kernel.io_uring_group</c>, seccomp), or it lacks a feature this backend needs.
    /// </summary>
    internal static bool IsAvailable(out string reason)
    {
        lock (s_availabilityLock)
        {
            if (s_unavailableReason is null)
            {
                s_unavailableReason = Probe(0, out string why) ? string.Empty : why;
            }

            reason = s_unavailableReason;
            return reason.Length == 0;
        }
    }

    /// <summary>Sets up and tears down a ring with <paramref name="extraSetupFlags"/>; false with the reason when that fails.</summary>
    internal static bool Probe(uint extraSetupFlags, out string reason)
    {
        if (!IoUringRing.TryCreate(SqEntries, 1024, extraSetupFlags, out IoUringRing? ring, out reason, out _))
        {
            return false;
        }

        ring!.Dispose();
        return true;
    }

    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        int fd = target.FileDescriptor;
        lock (_lock)
        {
            ThrowIfDisposed();
            if (_byDescriptor.TryGetValue(fd, out Entry? existing))
            {
                if (!existing.Handle.IsClosed)
                {
                    throw new ArgumentException("The handle is already registered with this event loop; change the existing registration's interest instead.", "handle");
                }

                // The descriptor number of a handle that was closed while registered, now reused.
                Forget(existing, awaitRelease: false);
            }

            int slot = TakeSlot();
            var entry = new Entry(fd, slot, target.Handle) { Token = token, Interest = interest, Mode = mode, Generation = ++_generations[slot] };
            _slots[slot] = entry;
            _byDescriptor.Add(fd, entry);
            ArmOrQueue(entry);
            Submit();
        }
    }

    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        int fd = target.FileDescriptor;
        lock (_lock)
        {
            ThrowIfDisposed();
            if (!_byDescriptor.TryGetValue(fd, out Entry? entry) || entry.Handle.IsClosed)
            {
                throw new ArgumentException("The handle is not registered with this event loop.", "handle");
            }

            Cancel(entry);
            entry.Token = token;
            entry.Interest = interest;
            entry.Mode = mode;
            entry.Generation = ++_generations[entry.Slot];
            ArmOrQueue(entry);
            Submit();
        }
    }

    public void Remove(BackendTarget target)
    {
        int fd = target.FileDescriptor;
        ulong release;
        lock (_lock)
        {
            if (_disposed || !_byDescriptor.TryGetValue(fd, out Entry? entry))
            {
                // Not watched (or the ring is gone): what was asked.
                return;
            }

            release = Forget(entry, awaitRelease: true);
            Submit();
        }

        AwaitRelease(release);
    }

    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        if (_issuerBound)
        {
            lock (_lock)
            {
                ThrowIfDisposed();
                if (_issuer != ThisThread)
                {
                    MoveToThisThread();
                }
            }
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMilliseconds;
        Interop.KernelTimespec ts;
        Interop.IoUringGeteventsArg arg = default;
        while (true)
        {
            uint toSubmit;
            uint minComplete;
            lock (_lock)
            {
                ThrowIfDisposed();
                _waitStarts++;
                SweepClosed();
                if (_issuerBound)
                {
                    ArmWake();
                    FlushDeferredCancels();
                }

                ArmQueued();
                _inWait = true;
                _ring.Publish();
                toSubmit = _ring.Unsubmitted;
                minComplete = MinComplete(toSubmit);
                if (_pendingCount > 0 || _parkedEndCount > 0)
                {
                    // Completions reaped when the ring moved to this thread, or parked receives' ends: return them without blocking.
                    remaining = 0;
                }
            }

            bool timedOut = false;
            int rc = 0;
            int errno = 0;
            uint? batchAsked = null;
            if (_ring.HasCompletions)
            {
                if (toSubmit > 0)
                {
                    rc = _ring.Enter(toSubmit, 0, 0, null, out errno);
                }
            }
            else if (remaining == 0)
            {
                // Also moves completions that overflowed the ring into it.
                rc = _ring.Enter(toSubmit, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out errno);
            }
            else if (minComplete > 1)
            {
                // A batching wait: up to the min-wait for minComplete completions, then whatever arrived (or the first
                // one after). The deadline is passed as well (an hour without one: the kernel would end the wait at the
                // min-wait otherwise), and the min-wait never goes past it.
                uint asked = minComplete > toSubmit ? minComplete - toSubmit : 0;
                uint minWait = EffectiveMinWait(asked);
                if (remaining < 0)
                {
                    ts.TvSec = MinWaitNoDeadlineSeconds;
                    ts.TvNsec = 0;
                }
                else
                {
                    ts.TvSec = remaining / 1000;
                    ts.TvNsec = (remaining % 1000) * 1_000_000L;
                    minWait = (uint)Math.Min(minWait, (remaining * 1000L) - 1);
                }

                arg.Ts = (ulong)(nuint)(&ts);
                arg.MinWaitUsec = minWait;
                batchAsked = asked;
                rc = _ring.Enter(toSubmit, minComplete, Interop.IoUring.IORING_ENTER_GETEVENTS | Interop.IoUring.IORING_ENTER_EXT_ARG, &arg, out errno);
            }
            else if (remaining < 0)
            {
                rc = _ring.Enter(toSubmit, 1, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out errno);
            }
            else
            {
                ts.TvSec = remaining / 1000;
                ts.TvNsec = (remaining % 1000) * 1_000_000L;
                arg.Ts = (ulong)(nuint)(&ts);
                arg.MinWaitUsec = 0;
                rc = _ring.Enter(toSubmit, 1, Interop.IoUring.IORING_ENTER_GETEVENTS | Interop.IoUring.IORING_ENTER_EXT_ARG, &arg, out errno);
            }

            if (rc < 0)
            {
                switch (errno)
                {
                    case Interop.Errno.ETIME:
                        // A batching wait with no deadline passes an hour: waited out, it simply waits again.
                        timedOut = remaining >= 0;
                        break;
                    case Interop.Errno.EINTR:
                    case Interop.Errno.EAGAIN:
                    case Interop.Errno.EBUSY:
                        // Interrupted, or the kernel is short of room for completions: reap what there is and go on.
                        break;
                    default:
                        throw ErrnoNames.Create("io_uring_enter", errno);
                }
            }

            int n = Reap(events, out bool woke);
            if (batchAsked is uint batch && MinCompleteOverride == 0)
            {
                _arrivalsToAsk = FollowBatch(batch, _lastArrivals);
            }

            if (n > 0 || woke || timedOut || remaining == 0 || _pendingCount > 0)
            {
                return n;
            }

            if (timeoutMilliseconds > 0)
            {
                remaining = Timeouts.Remaining(start, timeoutMilliseconds);
                if (remaining == 0)
                {
                    return 0;
                }
            }
        }
    }

    public void Wake()
    {
        if (Interlocked.Exchange(ref _wakePending, 1) != 0)
        {
            return;
        }

        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            if (_issuerBound)
            {
                // Only the loop's thread may submit: the ring polls the eventfd (armed by that thread), whose completion
                // ends the wait. Written before the ring is enabled, it is reported by the first wait.
                ulong one = 1;
                Interop.Sys.write(_wakeFd, &one, sizeof(ulong));
                return;
            }

            Interop.IoUringSqe* sqe = NextSqe();
            sqe->Opcode = Interop.IoUring.IORING_OP_NOP;
            sqe->UserData = WakeUserData;
            Submit();
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            for (int slot = 0; slot < _slotsUsed; slot++)
            {
                if (_slots[slot] is Entry entry)
                {
                    Forget(entry, awaitRelease: true);
                }
            }

            CancelAllChannels();
            DropParkedEnds();
            if (_issuerBound && CanSubmitHere)
            {
                FlushDeferredCancels();
            }

            Submit();
            bool notIssuer = false;
            if (_issuerBound && _issuer != ThisThread)
            {
                // Another thread than the issuer (a loop disposed after it stopped, or one that never ran): it may not
                // submit the cancellations, and nothing it waited for could complete. Nothing needs to: a ring never
                // enabled never had anything in the kernel, and a stopped loop's thread took back what it had there when
                // its run ended (RunEnded). Closing the ring (below) frees the rest.
                _channelOps -= UnsubmittedChannelOps(_ring);
                if (_issuer is null)
                {
                    _channelOps = 0;
                }

                _releases.Clear();
                notIssuer = true;
            }

            // Nothing reaps any more: take every completion (moving those that overflowed the ring into it) until the
            // removed polls have all completed, for at most a second. Closing the ring would cancel what is left, but
            // later, from a kernel worker, while the files stayed open.
            long deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
            var spin = default(SpinWait);
            while (!notIssuer && (_releases.Count > 0 || _channelOps > 0) && Stopwatch.GetTimestamp() < deadline)
            {
                _ring.Enter(0, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out _);

                uint tail = _ring.CqTail;
                uint head = _ring.CqHead;
                for (; head != tail; head++)
                {
                    ref Interop.IoUringCqe cqe = ref _ring.Cqe(head);
                    NoteFinalOnDispose(cqe.UserData, cqe.Flags);
                    if ((cqe.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
                    {
                        _releases.Remove(cqe.UserData);
                    }
                }

                _ring.AdvanceCq(head);
                if (_releases.Count > 0 || _channelOps > 0)
                {
                    spin.SpinOnce();
                }
            }

            // The completions reaped by the last wait and not dispatched (the loop is going away) hold buffers: the
            // buffers go with the mapping. The kernel writes into it no more once every operation ended.
            CompletionsDispatched();
            UnregisterFileTable(registered: !notIssuer);
            TearDownCompletions(opsDone: _channelOps <= 0, registered: !notIssuer);
        }

        _ring.Dispose();
        FreeFileCells();
        if (_wakeFd >= 0)
        {
            Interop.Sys.close(_wakeFd);
        }
    }

    /// <summary>
    /// The completions a blocking wait asks for: 1 (the first completion ends it), or, for a batching wait with at least
    /// <see cref="MinWaitInFlight"/> operations in flight after a wait that found at least <see cref="MinWaitBusy"/>
    /// receives, accepts or readiness events, the entries it submits (a send to a socket with room completes while it is submitted) and a quarter
    /// of what is in flight. Under the lock.
    /// </summary>
    private uint MinComplete(uint toSubmit)
    {
        if (!_batchingWaits || Volatile.Read(ref _minWaitUsec) == 0)
        {
            return 1;
        }

        if (Volatile.Read(ref _wakePending) != 0)
        {
            // A wake-up was written: its completion alone must end this wait.
            return 1;
        }

        uint forced = Volatile.Read(ref _minCompleteOverride);
        if (forced > 0)
        {
            return forced;
        }

        int inFlight = _channelOps;
        if (inFlight < MinWaitInFlight || _lastArrivals < MinWaitBusy)
        {
            return 1;
        }

        return Math.Min(toSubmit + Math.Min((uint)(inFlight / 4), _arrivalsToAsk), _ring.CqEntries / 2);
    }

    /// <summary>
    /// After a batching wait that asked for <paramref name="asked"/> arrivals and found <paramref name="found"/>: what
    /// is in flight is not what will arrive (an idle connection's receive is in flight too), so the batch follows what
    /// came. Fewer than asked (the min-wait ended the wait, or a wake-up or a timer did): the next wait asks for as many
    /// as came, at least <see cref="MinWaitBusy"/>, so that a few busy peers among many idle connections are not kept
    /// waiting for company that is not there. More than asked (more came while the loop woke): the next asks for twice
    /// as many. Issuer thread.
    /// </summary>
    internal static uint FollowBatch(uint asked, uint found) =>
        found < asked ? Math.Max(found, MinWaitBusy)
            : found > asked ? (found >= uint.MaxValue / 2 ? uint.MaxValue : found * 2)
            : asked;

    /// <summary>The poll events for an interest: readable also asks for <c>EPOLLRDHUP</c>, as the epoll backend does.</summary>
    internal static uint ToPollEvents(Interest interest)
    {
        EpollEvents events = EpollEvents.None;
        if ((interest & Interest.Readable) != 0)
        {
            events |= EpollEvents.In | EpollEvents.RdHup;
        }

        if ((interest & Interest.Writable) != 0)
        {
            events |= EpollEvents.Out;
        }

        return (uint)events;
    }

    private static ulong UserData(int slot, uint generation) => ((ulong)(uint)slot << 32) | generation;

    private int Reap(Span<BackendEvent> events, out bool woke)
    {
        woke = false;
        int written = 0;
        lock (_lock)
        {
            _inWait = false;
            ReapParkedEnds();
            uint head = _ring.CqHead;
            uint tail = _ring.CqTail;
            // What arrived: receives, accepts and readiness; not the sends (one to a socket with room completes while it
            // is submitted, and says nothing of the load), nor wake-ups and removals.
            uint arrivals = 0;
            while (head != tail && written < events.Length)
            {
                ref Interop.IoUringCqe cqe = ref _ring.Cqe(head);
                ulong userData = cqe.UserData;
                int res = cqe.Res;
                uint flags = cqe.Flags;
                head++;
                if (userData == WakeUserData)
                {
                    woke = true;
                    if (_batchingWaits)
                    {
                        // The single-shot poll is armed again at the next wait: empty the eventfd first (before a new
                        // Wake may write it again), or the poll would complete at once.
                        ulong count;
                        Interop.Sys.read(_wakeFd, &count, sizeof(ulong));
                    }

                    Volatile.Write(ref _wakePending, 0);
                    if ((flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
                    {
                        // The eventfd's multishot poll ended (issuer-bound ring): armed again at the next wait.
                        _wakeArmed = false;
                    }

                    continue;
                }

                if (userData == RemovalUserData)
                {
                    continue;
                }

                if ((userData & CompletionTag) != 0)
                {
                    if (((userData >> KindShift) & 0xF) is KindReceive or KindAccept)
                    {
                        arrivals++;
                    }

                    ReapCompletion(userData, res, flags);
                    continue;
                }

                arrivals++;

                int slot = (int)(userData >> 32);
                Entry? entry = slot < _slotsUsed ? _slots[slot] : null;
                if (entry is null || entry.Generation != (uint)userData)
                {
                    // A completion of a poll that was removed or replaced since: never reported.
                    if (_releases.Count != 0 && (flags & Interop.IoUring.IORING_CQE_F_MORE) == 0 && _releases.ContainsKey(userData))
                    {
                        _releases[userData] = true;
                    }

                    continue;
                }

                if (entry.Handle.IsClosed)
                {
                    // Closed without Remove (a misuse the loop tolerates): epoll would have forgotten it with the last
                    // descriptor; a poll holds a reference on the file, so let it go now.
                    if ((flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
                    {
                        entry.Armed = false;
                    }

                    Forget(entry, awaitRelease: false);
                    continue;
                }

                if ((flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
                {
                    entry.Armed = false;
                    if (entry.Mode != TriggerMode.OneShot && (res >= 0 || res == -Interop.Errno.ECANCELED))
                    {
                        QueueRearm(entry);
                    }
                }

                if (res < 0)
                {
                    if (res == -Interop.Errno.ECANCELED)
                    {
                        continue;
                    }

                    // The poll could not be armed (the descriptor is gone): the target is in error, and no longer watched.
                    events[written].Token = entry.Token;
                    events[written].Readiness = Readiness.Error;
                    events[written].SocketError = System.Net.Sockets.SocketError.Success;
                    written++;
                    continue;
                }

                Readiness readiness = Filter(EpollBackend.ToReadiness((EpollEvents)(uint)res), entry.Interest);
                if (readiness == Readiness.None)
                {
                    continue;
                }

                events[written].Token = entry.Token;
                events[written].Readiness = readiness;
                events[written].SocketError = System.Net.Sockets.SocketError.Success;
                written++;
            }

            _ring.AdvanceCq(head);
            _lastArrivals = arrivals;
            if (_minWaitAdaptive && arrivals > 0)
            {
                long now = Stopwatch.GetTimestamp();
                if (_lastArrivalReap != 0)
                {
                    _ticksPerArrival = FoldArrivals(_ticksPerArrival, now - _lastArrivalReap, arrivals, Stopwatch.Frequency);
                }

                _lastArrivalReap = now;
            }
        }

        return written;
    }

    /// <summary>Keeps what the interest asked for, and always the hang-up and error conditions.</summary>
    private static Readiness Filter(Readiness readiness, Interest interest)
    {
        Readiness allowed = Readiness.Closed | Readiness.Error;
        if ((interest & Interest.Readable) != 0)
        {
            allowed |= Readiness.Readable | Readiness.ReadClosed;
        }

        if ((interest & Interest.Writable) != 0)
        {
            allowed |= Readiness.Writable;
        }

        return readiness & allowed;
    }

    private void Arm(Entry entry)
    {
        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = Interop.IoUring.IORING_OP_POLL_ADD;
        sqe->Fd = entry.Fd;
        sqe->OpFlags = ToPollEvents(entry.Interest);
        sqe->Len = entry.Mode == TriggerMode.Edge ? Interop.IoUring.IORING_POLL_ADD_MULTI : 0;
        sqe->UserData = UserData(entry.Slot, entry.Generation);
        entry.Armed = true;

        // The thread that will submit the poll: the Submit or wait that follows on this thread, unless another thread's
        // submission takes the entry first (then a Remove on this thread does not wait, and the file goes a moment later).
        entry.ArmedBy = Environment.CurrentManagedThreadId;
    }

    /// <summary>
    /// Removes <paramref name="entry"/>'s poll and frees its slot, moving the slot's generation on. Under the lock; the
    /// caller submits. With <paramref name="awaitRelease"/>, returns the user data of the poll whose final completion
    /// <see cref="AwaitRelease"/> is to wait for: 0 when no poll was armed, or when the calling thread armed it (the
    /// kernel then completes the cancelled poll, and lets go of its file, before the submitting call returns).
    /// </summary>
    private ulong Forget(Entry entry, bool awaitRelease)
    {
        if (_byDescriptor.TryGetValue(entry.Fd, out Entry? current) && current == entry)
        {
            _byDescriptor.Remove(entry.Fd);
        }

        ulong release = 0;
        if (awaitRelease && entry.Armed && (_issuerBound ? !CanSubmitHere : entry.ArmedBy != Environment.CurrentManagedThreadId))
        {
            release = UserData(entry.Slot, entry.Generation);
            _releases[release] = false;
        }

        Cancel(entry);
        ++_generations[entry.Slot];
        _slots[entry.Slot] = null;
        _freeSlots[_freeCount++] = entry.Slot;
        return release;
    }

    /// <summary>
    /// Waits (briefly: at most a second) until the removed poll <paramref name="release"/> has completed. A cancelled
    /// poll completes in the thread that armed it (the kernel's task work), and only then lets go of its reference on
    /// the file: returning before would let the owner close a socket that stays open (no FIN, a port still bound) until
    /// that thread runs. When the arming thread is the calling one, the completion is already there.
    /// </summary>
    private void AwaitRelease(ulong release)
    {
        if (release == 0)
        {
            return;
        }

        long deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        long quietSince = Stopwatch.GetTimestamp();
        int waitStarts = -1;
        var spin = default(SpinWait);
        while (true)
        {
            lock (_lock)
            {
                long now = Stopwatch.GetTimestamp();
                if (_releases[release] || FinalCompletionQueued(release) || now > deadline)
                {
                    _releases.Remove(release);
                    return;
                }

                if (_issuerBound)
                {
                    // Only the loop's thread can submit the removal, at its next wait (it was woken if it waits). A loop
                    // that starts no wait for 100 ms is taken as stopped: the file is let go when it waits again, or
                    // when the backend is disposed.
                    if (_inWait || _waitStarts != waitStarts)
                    {
                        waitStarts = _waitStarts;
                        quietSince = now;
                    }
                    else if (now - quietSince > Stopwatch.Frequency / 10)
                    {
                        _releases.Remove(release);
                        return;
                    }
                }

                DropStalePrefix();
                if (_ring.CqOverflowed)
                {
                    // The completion may be among those the kernel holds until the ring has room, which only the loop's
                    // reaping makes: do not stall the caller (the file is let go a moment later).
                    _releases.Remove(release);
                    return;
                }
            }

            spin.SpinOnce();
        }
    }

    /// <summary>
    /// Frees the completions at the head of the queue that a wait would drop anyway (removals, removed or replaced polls),
    /// so that the kernel can move completions that overflowed the ring into it while the loop is busy. Under the lock.
    /// </summary>
    private void DropStalePrefix()
    {
        uint head = _ring.CqHead;
        uint tail = _ring.CqTail;
        uint start = head;
        for (; head != tail; head++)
        {
            ref Interop.IoUringCqe cqe = ref _ring.Cqe(head);
            ulong userData = cqe.UserData;
            if (userData == WakeUserData)
            {
                break;
            }

            if ((userData & CompletionTag) != 0 && userData != RemovalUserData)
            {
                // The loop's to dispatch.
                break;
            }

            if (userData != RemovalUserData)
            {
                int slot = (int)(userData >> 32);
                Entry? entry = slot < _slotsUsed ? _slots[slot] : null;
                if (entry is not null && entry.Generation == (uint)userData)
                {
                    break;
                }

                if ((cqe.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0 && _releases.ContainsKey(userData))
                {
                    _releases[userData] = true;
                }
            }
        }

        if (head != start)
        {
            _ring.AdvanceCq(head);
            if (CanSubmitHere)
            {
                _ring.Enter(0, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out _);
            }
        }
    }

    /// <summary>Whether the completion queue holds the final completion of <paramref name="userData"/>. Under the lock.</summary>
    private bool FinalCompletionQueued(ulong userData)
    {
        uint tail = _ring.CqTail;
        for (uint head = _ring.CqHead; head != tail; head++)
        {
            ref Interop.IoUringCqe cqe = ref _ring.Cqe(head);
            if (cqe.UserData == userData && (cqe.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
            {
                return true;
            }
        }

        return false;
    }

    private void Cancel(Entry entry)
    {
        if (!entry.Armed)
        {
            return;
        }

        // The poll may have completed already (its completion not yet reaped): then the removal finds nothing (ENOENT),
        // and the completion is dropped by its generation. ASYNC_CANCEL rather than POLL_REMOVE: a POLL_REMOVE that meets
        // the poll while its task work is pending fails with EALREADY and leaves it armed (a multishot poll then goes on,
        // holding the file), which an issuer-bound ring, whose task work waits for the next wait, meets often.
        SubmitCancel(Interop.IoUring.IORING_OP_ASYNC_CANCEL, UserData(entry.Slot, entry.Generation), RemovalUserData);
        entry.Armed = false;
    }

    /// <summary>
    /// Looks at a few registrations per wait, in turn, for a handle that was closed without Remove (a misuse the loop
    /// tolerates, see <see cref="Forget"/>): epoll forgets such a descriptor when it is closed, but a poll holds a
    /// reference on the file, which would keep a socket open (no FIN, a port still bound) until its next event.
    /// Under the lock.
    /// </summary>
    private void SweepClosed()
    {
        for (int i = 0; i < SweepPerWait && _slotsUsed > 0; i++)
        {
            _sweepCursor = _sweepCursor + 1 >= _slotsUsed ? 0 : _sweepCursor + 1;
            if (_slots[_sweepCursor] is Entry entry && entry.Handle.IsClosed)
            {
                Forget(entry, awaitRelease: false);
            }
        }
    }

    private void QueueRearm(Entry entry)
    {
        if (entry.RearmQueued)
        {
            return;
        }

        if (_rearmCount == _rearm.Length)
        {
            Array.Resize(ref _rearm, _rearm.Length * 2);
        }

        entry.RearmQueued = true;
        _rearm[_rearmCount++] = entry;
    }

    /// <summary>
    /// Arms a new or changed registration now when a wait is under way (so that it takes effect while the other thread
    /// waits), otherwise at the start of the next wait. A poll's completion is a snapshot of the readiness when it
    /// completed, which the wait does not check again as <c>epoll_wait</c> does: armed while the loop runs callbacks, it
    /// could complete before a callback drains the target and then report a readiness that is gone.
    /// </summary>
    private void ArmOrQueue(Entry entry)
    {
        if (_inWait && !CanSubmitHere)
        {
            // Issuer-bound ring, another thread: the waiting loop thread arms it when woken.
            QueueRearm(entry);
            Wake();
        }
        else if (_inWait)
        {
            Arm(entry);
            Submit();
        }
        else
        {
            QueueRearm(entry);
        }
    }

    /// <summary>Arms the queued registrations (completed level and edge polls, and new or changed ones), unless they were armed or removed meanwhile.</summary>
    private void ArmQueued()
    {
        for (int i = 0; i < _rearmCount; i++)
        {
            Entry entry = _rearm[i];
            _rearm[i] = null!;
            entry.RearmQueued = false;
            if (!entry.Armed && _slots[entry.Slot] == entry)
            {
                Arm(entry);
            }
        }

        _rearmCount = 0;
    }

    private Interop.IoUringSqe* NextSqe()
    {
        Interop.IoUringSqe* sqe = _ring.TryGetSqe();
        if (sqe is null)
        {
            Submit();
            sqe = _ring.TryGetSqe();
            if (sqe is null)
            {
                throw new InvalidOperationException("The io_uring submission queue is full and the kernel does not take entries from it.");
            }
        }

        return sqe;
    }

    /// <summary>
    /// Publishes the written entries and enters them. Under the lock. On an issuer-bound ring, only the issuer enters
    /// (with <c>IORING_ENTER_GETEVENTS</c>, so that the task work of what it cancelled runs now and the files are let
    /// go before this returns); another thread wakes a waiting issuer, which enters them at its next wait.
    /// </summary>
    private void Submit()
    {
        _ring.Publish();
        uint enterFlags = 0;
        if (_issuerBound)
        {
            if (!CanSubmitHere)
            {
                if (_inWait || _deferredCancelCount > 0)
                {
                    Wake();
                }

                return;
            }

            enterFlags = Interop.IoUring.IORING_ENTER_GETEVENTS;
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        while (true)
        {
            uint pending = _ring.Unsubmitted;
            if (pending == 0)
            {
                return;
            }

            int rc = _ring.Enter(pending, 0, enterFlags, null, out int errno);
            if (rc >= 0)
            {
                if (rc == 0)
                {
                    return;
                }

                continue;
            }

            switch (errno)
            {
                case Interop.Errno.EINTR:
                    continue;
                case Interop.Errno.EAGAIN:
                case Interop.Errno.EBUSY:
                    // The kernel is short of room for completions: the entries stay queued, and the next wait enters them.
                    return;
                default:
                    throw ErrnoNames.Create("io_uring_enter (submit)", errno);
            }
        }
    }

    /// <summary>A free slot of the readiness table. Under <c>_lock</c>.</summary>
    private int TakeSlot() => TakeSlot(ref _slots, ref _generations, ref _freeSlots, ref _freeCount, ref _slotsUsed);

    /// <summary>
    /// A free slot of a table (<paramref name="items"/>, with its generations and free list): a freed one first, else the
    /// next, growing the three arrays together. Under <c>_lock</c>.
    /// </summary>
    private static int TakeSlot<T>(ref T?[] items, ref uint[] generations, ref int[] free, ref int freeCount, ref int used)
        where T : class
    {
        if (freeCount > 0)
        {
            return free[--freeCount];
        }

        if (used == items.Length)
        {
            Array.Resize(ref items, items.Length * 2);
            Array.Resize(ref generations, generations.Length * 2);
            Array.Resize(ref free, free.Length * 2);
        }

        return used++;
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            throw new ObjectDisposedException(nameof(IoUringBackend));
        }
    }

    /// <summary>
    /// A cancellation (<c>POLL_REMOVE</c>, <c>ASYNC_CANCEL</c>) of <paramref name="target"/>: written now when this thread
    /// may submit, otherwise kept for the issuer's next wait (which the caller's <see cref="Submit"/> wakes). Under the lock.
    /// </summary>
    private void SubmitCancel(byte opcode, ulong target, ulong userData)
    {
        if (!CanSubmitHere)
        {
            if (_deferredCancelCount == _deferredCancels.Length)
            {
                Array.Resize(ref _deferredCancels, _deferredCancels.Length * 2);
            }

            _deferredCancels[_deferredCancelCount++] = new DeferredCancel { Opcode = opcode, Target = target, UserData = userData };
            return;
        }

        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = opcode;
        sqe->Fd = -1;
        sqe->Addr = target;
        sqe->UserData = userData;
    }

    /// <summary>Writes the cancellations other threads asked for (issuer, at the start of a wait). Under the lock.</summary>
    private void FlushDeferredCancels()
    {
        for (int i = 0; i < _deferredCancelCount; i++)
        {
            ref DeferredCancel c = ref _deferredCancels[i];
            Interop.IoUringSqe* sqe = NextSqe();
            sqe->Opcode = c.Opcode;
            sqe->Fd = -1;
            sqe->Addr = c.Target;
            sqe->UserData = c.UserData;
        }

        _deferredCancelCount = 0;
    }

    /// <summary>Arms the multishot poll of the wake-up eventfd when it is not (issuer, at the start of a wait). Under the lock.</summary>
    private void ArmWake()
    {
        if (_wakeArmed)
        {
            return;
        }

        if (_batchingWaits)
        {
            // A batching wait ends only when enough completions arrived, at its deadline, at the end of the min-wait
            // with something there, or when a timeout request expired meanwhile. So a wake-up is a single-shot poll of
            // the eventfd, non-lazy (EPOLLEXCLUSIVE: the kernel wakes the waiting thread to run its task work at once,
            // rather than when enough completions are pending), linked to a timeout of zero, whose expiry ends the wait.
            // Its completion carries the removal user data, which every reaper drops. Room for both first, so that the
            // pair is entered together.
            if (_ring.SqEntries - _ring.Unsubmitted < 2)
            {
                Submit();
            }

            Interop.IoUringSqe* poll = NextSqe();
            poll->Opcode = Interop.IoUring.IORING_OP_POLL_ADD;
            poll->Flags = Interop.IoUring.IOSQE_IO_LINK;
            poll->Fd = _wakeFd;
            poll->OpFlags = (uint)(EpollEvents.In | EpollEvents.Exclusive);
            poll->UserData = WakeUserData;
            Interop.IoUringSqe* timeout = NextSqe();
            timeout->Opcode = Interop.IoUring.IORING_OP_TIMEOUT;
            timeout->Fd = -1;
            timeout->Addr = (ulong)(nuint)s_zeroTimespec;
            timeout->Len = 1;
            timeout->UserData = RemovalUserData;
            _wakeArmed = true;
            return;
        }

        // Edge-like: one completion per write (and one at once when armed on a written eventfd). The counter is never read.
        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = Interop.IoUring.IORING_OP_POLL_ADD;
        sqe->Fd = _wakeFd;
        sqe->OpFlags = (uint)EpollEvents.In;
        sqe->Len = Interop.IoUring.IORING_POLL_ADD_MULTI;
        sqe->UserData = WakeUserData;
        _wakeArmed = true;
    }

    /// <summary>
    /// Makes the calling thread the ring's issuer (its first wait, under the lock). The first time, it enables the ring
    /// set up disabled. When another thread was the issuer (the loop ran before on a thread that it left: Stop, then Start
    /// on a new thread), only that thread could submit to the ring or run its task work, so the ring is replaced by a new
    /// one set up for this thread. The old thread took back what it had in the kernel when its run ended
    /// (<see cref="RunEnded"/>): its registrations wait to be armed again, and the completions it reaped wait to be
    /// dispatched. What was written to the old ring and never entered is carried over; the buffer ring is registered with
    /// the new ring. A move costs a ring setup and a re-arm per registration.
    /// </summary>
    private void MoveToThisThread()
    {
        if (_issuer is not null)
        {
            if (!IoUringRing.TryCreate(SqEntries, _cqEntries, _extraSetupFlags | IssuerFlags, out IoUringRing? fresh, out string reason, out _))
            {
                throw new InvalidOperationException("The io_uring ring could not be set up again for the loop's new thread: " + reason);
            }

            IoUringRing old = _ring;
            uint unsubmitted = old.Unsubmitted;
            for (uint i = 0; i < unsubmitted; i++)
            {
                Interop.IoUringSqe* from = old.UnsubmittedSqe(i);
                ulong userData = from->UserData;
                // Not the table's updates: the new ring's table is registered with what they installed (MoveFileTable).
                bool channelOp = (userData & CompletionTag) != 0 && userData < RemovalUserData && ((userData >> KindShift) & 0xF) is not (KindCancel or KindFiles);
                bool poll = from->Opcode == Interop.IoUring.IORING_OP_POLL_ADD && userData < RemovalUserData && (userData & CompletionTag) == 0;
                if (channelOp || poll)
                {
                    *fresh!.TryGetSqe() = *from;
                }
            }

            // Cancellations other threads asked for meanwhile: of operations the old ring no longer has.
            _deferredCancelCount = 0;
            foreach (ulong key in new List<ulong>(_releases.Keys))
            {
                _releases[key] = true;
            }

            MoveFileTable(fresh!);

            // Nothing of the old ring is in the kernel any more (RunEnded took it back): unmapping and closing it frees it
            // (and its file table, once the kernel tore it down).
            old.Dispose();
            _ring = fresh!;
            _wakeArmed = false;
            MoveBufferRing();
            _moves++;
        }

        int errno = _ring.Enable();
        if (errno != 0)
        {
            throw ErrnoNames.Create("io_uring_register(IORING_REGISTER_ENABLE_RINGS)", errno);
        }

        _issuer = ThisThread;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// An issuer-bound ring: only this thread can cancel what it has in the kernel, and a loop run again on another thread
    /// gets a new ring. So every poll, receive and send (and the wake-up poll) is cancelled here and its final completion
    /// awaited (the cancellations complete in this thread's task work, at once; at most a second): the registrations are
    /// queued to be armed again at the next wait, on whichever thread, and the receive and send completions (data that
    /// arrived, bytes sent, or a cancelled end, after which the stream arms its receive again or sends the rest) wait to be
    /// dispatched after that wait. A loop that runs again on this thread keeps the ring.
    /// </remarks>
    public void RunEnded()
    {
        lock (_lock)
        {
            if (!_issuerBound || _disposed || _issuer != ThisThread)
            {
                return;
            }

            try
            {
                TakeBackFromKernel();
            }
            catch (Exception ex) when (ex is InvalidOperationException or NativeCallException)
            {
                // The ring failed: the next wait or the dispose reports it.
            }
        }
    }

    /// <summary>See <see cref="RunEnded"/>. Under the lock, on the issuer.</summary>
    private void TakeBackFromKernel()
    {
        var polls = new HashSet<ulong>();
        for (int slot = 0; slot < _slotsUsed; slot++)
        {
            if (_slots[slot] is Entry entry && entry.Armed)
            {
                polls.Add(UserData(entry.Slot, entry.Generation));
            }
        }

        CancelEverything(polls);
        long deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        long reissue = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 200);
        var spin = default(SpinWait);
        while (true)
        {
            // Parked receives were never in the kernel: their ends are reaped here, with the cancelled ones'.
            ReapParkedEnds();
            uint tail = _ring.CqTail;
            uint head = _ring.CqHead;
            for (; head != tail; head++)
            {
                ref Interop.IoUringCqe cqe = ref _ring.Cqe(head);
                ulong userData = cqe.UserData;
                bool final = (cqe.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0;
                if (userData == WakeUserData)
                {
                    // A wake-up written meanwhile stays in the eventfd, which the next ring's poll reports at once.
                    _wakeArmed &= !final;
                }
                else if (userData == RemovalUserData)
                {
                }
                else if ((userData & CompletionTag) != 0)
                {
                    ReapCompletion(userData, cqe.Res, cqe.Flags);
                }
                else if (final)
                {
                    // A poll's event is not delivered: the poll is armed again at the next wait and reports it again.
                    polls.Remove(userData);
                    if (_releases.ContainsKey(userData))
                    {
                        _releases[userData] = true;
                    }
                }
            }

            _ring.AdvanceCq(head);
            if ((polls.Count == 0 && _channelOps <= 0 && !_wakeArmed) || Stopwatch.GetTimestamp() > deadline)
            {
                break;
            }

            if (Stopwatch.GetTimestamp() > reissue)
            {
                // Not all final yet (a send that the socket still holds?): ask again (those that ended answer ENOENT).
                CancelEverything(polls);
                reissue = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 200);
            }

            spin.SpinOnce();
            _ring.Enter(0, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out _);
        }

        for (int slot = 0; slot < _slotsUsed; slot++)
        {
            if (_slots[slot] is Entry entry && entry.Armed)
            {
                entry.Armed = false;
                QueueRearm(entry);
            }
        }
    }

    /// <summary>Cancels <paramref name="polls"/>, every receive and send in flight, and the wake-up poll, and enters the cancellations. Under the lock, on the issuer.</summary>
    private void CancelEverything(HashSet<ulong> polls)
    {
        foreach (ulong userData in polls)
        {
            SubmitCancel(Interop.IoUring.IORING_OP_ASYNC_CANCEL, userData, RemovalUserData);
        }

        for (int slot = 0; slot < _channelsUsed; slot++)
        {
            if (_channels[slot] is CompletionChannel channel)
            {
                QueueCancelOperations(channel);
            }
        }

        if (_wakeArmed)
        {
            SubmitCancel(Interop.IoUring.IORING_OP_ASYNC_CANCEL, WakeUserData, RemovalUserData);
        }

        Submit();
    }

    /// <summary>The receives and sends written to <paramref name="ring"/> and never entered. Under the lock.</summary>
    private static int UnsubmittedChannelOps(IoUringRing ring)
    {
        int count = 0;
        uint n = ring.Unsubmitted;
        for (uint i = 0; i < n; i++)
        {
            ulong userData = ring.UnsubmittedSqe(i)->UserData;
            if ((userData & CompletionTag) != 0 && userData < RemovalUserData && ((userData >> KindShift) & 0xF) is not (KindCancel or KindFiles))
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>A cancellation another thread asked for on an issuer-bound ring.</summary>
    private struct DeferredCancel
    {
        public byte Opcode;
        public ulong Target;
        public ulong UserData;
    }

    /// <summary>One registration: its descriptor, slot, current generation and what it asks for. Guarded by the lock.</summary>
    private sealed class Entry
    {
        public Entry(int fd, int slot, System.Runtime.InteropServices.SafeHandle handle)
        {
            Fd = fd;
            Slot = slot;
            Handle = handle;
        }

        public int Fd { get; }

        /// <summary>The handle registered: a closed one means the registration is stale (its descriptor number may be reused).</summary>
        public System.Runtime.InteropServices.SafeHandle Handle { get; }

        public int Slot { get; }

        public uint Generation { get; set; }

        public ulong Token { get; set; }

        public Interest Interest { get; set; }

        public TriggerMode Mode { get; set; }

        /// <summary>A poll of the current generation is (or may still be) in the kernel.</summary>
        public bool Armed { get; set; }

        /// <summary>The managed thread that armed the current poll: a cancelled poll completes in that thread's task work.</summary>
        public int ArmedBy { get; set; }

        /// <summary>In the re-arm queue.</summary>
        public bool RearmQueued { get; set; }
    }
}
