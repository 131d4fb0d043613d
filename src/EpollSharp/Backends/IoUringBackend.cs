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
/// <para><see cref="Modify"/> removes the current poll (<c>IORING_OP_POLL_REMOVE</c>) and arms a new one, so a changed
/// interest is checked against the target's state (as <c>EPOLL_CTL_MOD</c> does). <see cref="Add"/> and Modify arm at
/// once while another thread waits; called between waits (from a callback, typically), they arm at the start of the next
/// wait, because a completion is a snapshot that the wait does not check again, and one taken before a callback drains
/// the target would report a readiness that is gone. <see cref="Remove"/> removes
/// the poll. Each registration has a slot and a generation that changes with every Modify and Remove; both are in the
/// request's user data, and a completion whose generation is not the slot's current one is dropped, so a poll that
/// completed before its removal was seen is never reported, neither to the removed registration nor to a later one that
/// reuses the slot.</para>
/// <para><see cref="Wake"/> submits a no-op (<c>IORING_OP_NOP</c>) whose completion ends the wait; a flag coalesces
/// wake-ups until the wait reaps it. Submissions come from any thread under one lock, and are entered at once, so an Add,
/// Modify or Remove takes effect while another thread waits. The wait is <c>io_uring_enter</c> with
/// <c>IORING_ENTER_GETEVENTS</c> and, for a finite timeout, <c>IORING_ENTER_EXT_ARG</c> with a timespec.</para>
/// <para>A poll holds a reference on the file. A handle closed without Remove (which the loop tolerates: epoll forgets
/// the descriptor with its last close) therefore stays open in the kernel until the backend notices: at its next
/// completion, when a wait's sweep (a few registrations per wait, in turn) finds the handle closed, or when the backend
/// is disposed. Remove and Dispose wait for the removed polls to complete, so that the files are let go when they return.</para>
/// <para>Unlike epoll, a poll accepts a regular file (which is always ready) rather than refusing it.</para>
/// </remarks>
internal sealed unsafe partial class IoUringBackend : IPollBackend, ICompletionIo
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

    private readonly object _lock = new();
    private readonly IoUringRing _ring;
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
        uint cq = (uint)Math.Max(BufferCount * 4, Math.Min(maxEvents, 1 << 16) * 4);
        if (!IoUringRing.TryCreate(SqEntries, cq, extraSetupFlags, out IoUringRing? ring, out string reason, out int setupErrno))
        {
            // Out of descriptors is no lack of support: the same exception as epoll_create1 gives then.
            throw setupErrno is Interop.Errno.EMFILE or Interop.Errno.ENFILE
                ? ErrnoNames.Create("io_uring_setup", setupErrno)
                : new PlatformNotSupportedException("The io_uring backend is not available: " + reason);
        }

        _ring = ring!;
        SetUpCompletions(completions);
    }

    public EventLoopBackend Kind => EventLoopBackend.IoUring;

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
        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMilliseconds;
        Interop.KernelTimespec ts;
        Interop.IoUringGeteventsArg arg = default;
        while (true)
        {
            uint toSubmit;
            lock (_lock)
            {
                ThrowIfDisposed();
                SweepClosed();
                ArmQueued();
                _inWait = true;
                _ring.Publish();
                toSubmit = _ring.Unsubmitted;
            }

            bool timedOut = false;
            int rc = 0;
            int errno = 0;
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
            else if (remaining < 0)
            {
                rc = _ring.Enter(toSubmit, 1, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out errno);
            }
            else
            {
                ts.TvSec = remaining / 1000;
                ts.TvNsec = (remaining % 1000) * 1_000_000L;
                arg.Ts = (ulong)(nuint)(&ts);
                rc = _ring.Enter(toSubmit, 1, Interop.IoUring.IORING_ENTER_GETEVENTS | Interop.IoUring.IORING_ENTER_EXT_ARG, &arg, out errno);
            }

            if (rc < 0)
            {
                switch (errno)
                {
                    case Interop.Errno.ETIME:
                        timedOut = true;
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
            if (n > 0 || woke || timedOut || timeoutMilliseconds == 0 || _pendingCount > 0)
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
            Submit();

            // Nothing reaps any more: take every completion (moving those that overflowed the ring into it) until the
            // removed polls have all completed, for at most a second. Closing the ring would cancel what is left, but
            // later, from a kernel worker, while the files stayed open.
            long deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
            var spin = default(SpinWait);
            while ((_releases.Count > 0 || _channelOps > 0) && Stopwatch.GetTimestamp() < deadline)
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
            TearDownCompletions(opsDone: _channelOps <= 0);
        }

        _ring.Dispose();
    }

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
            uint head = _ring.CqHead;
            uint tail = _ring.CqTail;
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
                    Volatile.Write(ref _wakePending, 0);
                    continue;
                }

                if (userData == RemovalUserData)
                {
                    continue;
                }

                if ((userData & CompletionTag) != 0)
                {
                    ReapCompletion(userData, res, flags);
                    continue;
                }

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
        if (awaitRelease && entry.Armed && entry.ArmedBy != Environment.CurrentManagedThreadId)
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
        var spin = default(SpinWait);
        while (true)
        {
            lock (_lock)
            {
                if (_releases[release] || FinalCompletionQueued(release) || Stopwatch.GetTimestamp() > deadline)
                {
                    _releases.Remove(release);
                    return;
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
            _ring.Enter(0, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out _);
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
        // and the completion is dropped by its generation.
        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = Interop.IoUring.IORING_OP_POLL_REMOVE;
        sqe->Fd = -1;
        sqe->Addr = UserData(entry.Slot, entry.Generation);
        sqe->UserData = RemovalUserData;
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
        if (_inWait)
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

    /// <summary>Publishes the written entries and enters them. Under the lock.</summary>
    private void Submit()
    {
        _ring.Publish();
        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        while (true)
        {
            uint pending = _ring.Unsubmitted;
            if (pending == 0)
            {
                return;
            }

            int rc = _ring.Enter(pending, 0, 0, null, out int errno);
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

    private int TakeSlot()
    {
        if (_freeCount > 0)
        {
            return _freeSlots[--_freeCount];
        }

        if (_slotsUsed == _slots.Length)
        {
            Array.Resize(ref _slots, _slots.Length * 2);
            Array.Resize(ref _generations, _generations.Length * 2);
            Array.Resize(ref _freeSlots, _freeSlots.Length * 2);
        }

        return _slotsUsed++;
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            throw new ObjectDisposedException(nameof(IoUringBackend));
        }
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
