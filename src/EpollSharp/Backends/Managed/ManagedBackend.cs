using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// The fallback backend, built only on managed socket APIs (<see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, int)"/>,
/// <see cref="Socket.Available"/>, a peeking <see cref="Socket.Receive(byte[], int, int, SocketFlags, out SocketError)"/>, a zero-byte
/// <see cref="Socket.Send(byte[], int, int, SocketFlags, out SocketError)"/>, and on Linux <c>Socket.GetRawSocketOption</c>): no P/Invoke,
/// so it runs wherever .NET runs, and it can be forced on Linux. <c>docs/backends-managed.md</c> has the full account and the measurements.
/// </summary>
/// <remarks>
/// <para><b>A wait</b> repeats, until it has something to report, is woken, or times out:</para>
/// <list type="number">
/// <item>Apply the registrations changed since the last wait (a copy taken under the gate, so the rest runs without it).</item>
/// <item><b>Scan</b>: non-blocking Selects over every armed registration, at most <see cref="ManagedSelectSet.Capacity"/> list entries each
///   (Socket.Select allocates its poll array from 80 on), then classify what each is ready for and apply its trigger mode.
///   Cost: O(registrations) per wait.</item>
/// <item><b>Block</b>: a Select with the timeout on the wake socket plus every registration whose next change would be reported.
///   Readiness that is present but must not be reported now (already reported in edge mode, outside the interest, a disarmed
///   one-shot, unread data under Interest.None) is left out, so the Select cannot return at once over and over; the next scan
///   looks at it again. Groups beyond the first are selected by <see cref="ManagedWatcher"/> threads. The Selects use each
///   registration's <see cref="ManagedEntry.Poller"/>, so a sleeping wait holds no reference on a registered handle.</item>
/// </list>
/// <para><b>Readiness.</b> Readable: the read list, with <see cref="Socket.Available"/> &gt; 0, or a listener, or a datagram socket.
///   Readable with nothing buffered on a stream: a pending error (Poll SelectError, asked before anything reads, because a read
///   or peek consumes it) means <see cref="Readiness.Error"/> | <see cref="Readiness.Closed"/> (a reset); otherwise a one-byte peek:
///   0 = end of stream (<see cref="Readiness.Readable"/> | <see cref="Readiness.ReadClosed"/>), an error = a reset, not connected = a
///   listener. <see cref="Readiness.Closed"/> without an error: end of stream and a zero-byte send fails (our side is shut too:
///   the full hang-up of EPOLLHUP). Error: the error list (POLLERR on Unix, a failed connect on Windows) for registrations not in
///   the read list. Closed and Error are reported whatever the interest. A registration whose handle was closed by its owner
///   is dropped without a report, as the kernel drops a closed descriptor.</para>
/// <para><b>Modes.</b> Level: whatever is present, on every wait. One-shot: once, then the registration is skipped entirely until
///   <see cref="Modify"/> re-arms it. Edge: the reported bits are remembered; a bit is reported again when it was seen gone and
///   comes back, and readability also when new data arrived since the last look: exactly by the arrival counter
///   (<c>tcpi_bytes_received</c>) on Linux TCP, otherwise when the receive queue's byte count changed. A report carries everything
///   present, as epoll's does. While edge registrations hold undrained data, the sleeping wait re-reads their counters every
///   <see cref="StaleCheckMilliseconds"/>. <see cref="Modify"/> forgets what was reported, so a readiness still present is reported
///   once more (as EPOLL_CTL_MOD does).</para>
/// <para><b>Threads.</b> <see cref="Add"/>, <see cref="Modify"/> and <see cref="Remove"/> take the gate; when the wait is blocked they
///   signal the wake socket, so it restarts with the change. A report is committed under the gate only for an entry that is
///   not removed and whose request did not change since the scan. <see cref="Remove"/> from another thread returns once the
///   waiting thread no longer uses the socket.</para>
/// </remarks>
internal sealed class ManagedBackend : IPollBackend
{
    /// <summary>Linux: <c>IPPROTO_TCP</c>.</summary>
    internal const int TcpLevel = 6;

    /// <summary>Linux: <c>TCP_INFO</c>.</summary>
    internal const int TcpInfoOption = 11;

    /// <summary>Linux: offset of <c>__u64 tcpi_bytes_received</c> in <c>struct tcp_info</c> (since 4.1; the struct only grows at its end).</summary>
    internal const int TcpInfoBytesReceivedOffset = 128;

    /// <summary>Room for <c>struct tcp_info</c> of current kernels (the kernel copies at most this much).</summary>
    private const int TcpInfoLength = 512;

    /// <summary>How often a sleeping wait looks for registered handles closed by their owners.</summary>
    internal const int ClosedCheckMilliseconds = 500;

    /// <summary>How often a sleeping wait re-reads the byte count of edge registrations that hold undrained data.</summary>
    internal const int StaleCheckMilliseconds = 10;

    // ---- Shared with other threads. ----
    private readonly object _gate = new();
    private readonly Dictionary<IntPtr, ManagedEntry> _byKey = new();
    private ManagedEntry[] _live = new ManagedEntry[16];
    private int _liveCount;
    private List<Socket> _retired = new();
    private bool _disposed;

    /// <summary>A registration changed since the last scan's snapshot.</summary>
    private volatile bool _dirty = true;

    /// <summary>1 while the waiting thread is about to block or blocked in Select: only then do changes and wakes write to the wake socket.</summary>
    private int _blocking;

    /// <summary>Set by <see cref="Wake"/>, consumed by the wait it ends.</summary>
    private int _wakeRequested;

    /// <summary>1 while a byte was sent to the wake socket and not yet drained: coalesces wake-ups.</summary>
    private int _signalPending;

    /// <summary>The managed thread id of the thread inside <see cref="Wait"/>, 0 when none.</summary>
    private int _waitThread;

    /// <summary>Incremented (under the gate) by every snapshot; an entry removed at epoch E is in no snapshot after E.</summary>
    private long _epoch;

    /// <summary>The epoch of the snapshot the waiting thread uses now (it no longer touches sockets of older ones).</summary>
    private long _usedEpoch;

    /// <summary>Removers blocked until the waiting thread lets go of a removed socket.</summary>
    private int _removersWaiting;

    /// <summary>Monitor for <see cref="_usedEpoch"/> and <see cref="_waitThread"/> changes that removers wait for.</summary>
    private readonly object _useGate = new();

    private readonly ManagedSignalSocket _wake;

    /// <summary>Monitor for "every watcher of this round has parked" (a plain monitor: ManualResetEventSlim allocates its lock the first time it blocks).</summary>
    private readonly object _parkGate = new();
    private int _activeWatchers;

    // ---- The waiting thread's own. ----
    private readonly List<ManagedWatcher> _watchers = new();
    private ManagedSignalSocket? _recall;
    private List<Socket> _retiredTaken = new();
    private ManagedEntry[] _snapshot = new ManagedEntry[16];
    private int _snapshotCount;
    private int _rotor;
    private readonly ManagedSelectSet _scanLists = new();
    private readonly ManagedSelectSet _own = new();
    private readonly int[] _chunk = new int[ManagedSelectSet.Capacity];
    private ManagedEntry[] _stale = new ManagedEntry[16];
    private int _staleCount;
    private ManagedEntry[] _evict = new ManagedEntry[16];
    private int _evictCount;
    private int _chunkCount;
    private ManagedEntry?[] _candidates;
    private Readiness[] _candidateReadiness;
    private int _candidateCount;
    private int _candidateLimit;
    private readonly byte[] _probe = new byte[1];
    private readonly byte[] _tcpInfo = new byte[TcpInfoLength];

    /// <exception cref="PlatformNotSupportedException">No loopback TCP connection can be made (the backend wakes itself through one).</exception>
    public ManagedBackend(int maxEvents)
    {
        try
        {
            _wake = ManagedSignalSocket.Create();
        }
        catch (SocketException ex)
        {
            throw new PlatformNotSupportedException(
                "The managed backend wakes its Select through a loopback TCP connection, and none could be made here (" + ex.SocketErrorCode.ToString() + ").",
                ex);
        }

        _candidates = new ManagedEntry?[Math.Max(1, maxEvents)];
        _candidateReadiness = new Readiness[_candidates.Length];
    }

    public EventLoopBackend Kind => EventLoopBackend.Managed;

    /// <summary>The recall socket every watcher's read list starts with.</summary>
    internal Socket RecallReceiver => _recall!.Receiver;

    /// <summary>How many watcher threads exist (for tests and measurements).</summary>
    internal int WatcherCount => _watchers.Count;

    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        IntPtr key = target.Handle.DangerousGetHandle();
        bool owns = target.Socket is null;
        Socket socket = target.Socket ?? WrapHandle(target.Handle);
        Socket poller = owns ? socket : CreatePoller(target.Socket!, target.Handle);
        try
        {
            var entry = new ManagedEntry(target.Handle, socket, poller, key, token, ownsSocket: owns);
            lock (_gate)
            {
                if (_disposed)
                {
                    throw new ObjectDisposedException(nameof(ManagedBackend));
                }

                if (_byKey.TryGetValue(key, out ManagedEntry? existing))
                {
                    if (!existing.Handle.IsClosed)
                    {
                        throw new ArgumentException("The handle is already registered with this event loop; change the existing registration's interest instead.", "handle");
                    }

                    // The old socket was closed before its registration was disposed (so the loop never removed it), and
                    // the OS gave its number to this one: forget the old entry, as the kernel forgot the old descriptor.
                    Evict(existing);
                }

                entry.Interest = interest;
                entry.Mode = mode;
                entry.Version = 1;
                if (_liveCount == _live.Length)
                {
                    Array.Resize(ref _live, _live.Length * 2);
                }

                entry.Index = _liveCount;
                _live[_liveCount++] = entry;
                _byKey.Add(key, entry);
                _dirty = true;
            }
        }
        catch
        {
            if (owns)
            {
                socket.Dispose();
            }
            else if (!ReferenceEquals(poller, socket))
            {
                poller.Dispose();
            }

            throw;
        }

        AfterChange();
    }

    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        IntPtr key = target.Handle.DangerousGetHandle();
        lock (_gate)
        {
            if (_disposed)
            {
                throw new ObjectDisposedException(nameof(ManagedBackend));
            }

            if (!_byKey.TryGetValue(key, out ManagedEntry? entry) || entry.Token != token)
            {
                throw new ArgumentException("The handle is not registered with this event loop.", "handle");
            }

            entry.Interest = interest;
            entry.Mode = mode;
            entry.Version++;
            _dirty = true;
        }

        AfterChange();
    }

    /// <summary>
    /// Stops watching. From a thread other than the waiting one this returns only once the waiting thread no longer uses
    /// the socket (at most one scan, or a wake-up, later): .NET's <see cref="Socket.Dispose()"/> resets the connection
    /// instead of closing it gracefully when another thread holds a reference on the socket at that moment, and a
    /// socket is typically disposed right after its registration.
    /// </summary>
    public void Remove(BackendTarget target)
    {
        IntPtr key = target.Handle.DangerousGetHandle();
        long removedAt;
        lock (_gate)
        {
            if (_disposed || !_byKey.TryGetValue(key, out ManagedEntry? entry) || !ReferenceEquals(entry.Handle, target.Handle))
            {
                return;
            }

            Evict(entry);
            removedAt = _epoch;
        }

        // Wake a blocked wait even though nothing is to be reported: it must move to a snapshot without this socket.
        AfterChange();
        int waiter = Volatile.Read(ref _waitThread);
        if (waiter != 0 && waiter != Environment.CurrentManagedThreadId)
        {
            WaitUntilUnused(removedAt);
        }
    }

    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        // Full fence: pairs with Remove, which reads _waitThread after publishing the removal (AfterChange's barrier).
        Interlocked.Exchange(ref _waitThread, Environment.CurrentManagedThreadId);
        try
        {
            return WaitCore(events, timeoutMilliseconds);
        }
        finally
        {
            Interlocked.Exchange(ref _waitThread, 0);
            if (Volatile.Read(ref _removersWaiting) != 0)
            {
                lock (_useGate)
                {
                    Monitor.PulseAll(_useGate);
                }
            }
        }
    }

    private int WaitCore(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        while (true)
        {
            if (_dirty)
            {
                Refresh();
            }

            int n = Scan(events);
            if (n > 0)
            {
                return n;
            }

            if (Interlocked.Exchange(ref _wakeRequested, 0) != 0)
            {
                return 0;
            }

            int remaining = Remaining(timeoutMilliseconds, start);
            if (remaining == 0)
            {
                return 0;
            }

            // Announce the block, then look once more: a change or wake made before this point is seen here; one made
            // after it sees _blocking set and signals the wake socket (Interlocked on both sides: one of them must see the other).
            Interlocked.Exchange(ref _blocking, 1);
            try
            {
                if (_dirty || Volatile.Read(ref _wakeRequested) != 0)
                {
                    continue;
                }

                Block(remaining);
            }
            finally
            {
                Volatile.Write(ref _blocking, 0);
            }
        }
    }

    public void Wake()
    {
        Interlocked.Exchange(ref _wakeRequested, 1);
        if (Volatile.Read(ref _blocking) != 0)
        {
            Signal();
        }
    }

    public void Dispose()
    {
        var owned = new List<Socket>();
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            for (int i = 0; i < _liveCount; i++)
            {
                _live[i].Removed = true;
                if (_live[i].OwnsSocket)
                {
                    owned.Add(_live[i].Socket);
                }

                if (!ReferenceEquals(_live[i].Poller, _live[i].Socket))
                {
                    owned.Add(_live[i].Poller);
                }

                _live[i] = null!;
            }

            _liveCount = 0;
            _byKey.Clear();
            owned.AddRange(_retired);
            _retired.Clear();
        }

        foreach (ManagedWatcher watcher in _watchers)
        {
            watcher.Stop();
        }

        _wake.Dispose();
        _recall?.Dispose();
        foreach (Socket socket in owned)
        {
            socket.Dispose();
        }

        foreach (Socket socket in _retiredTaken)
        {
            socket.Dispose();
        }

        _retiredTaken.Clear();
        Array.Clear(_snapshot, 0, _snapshot.Length);
        _snapshotCount = 0;
    }

    /// <summary>Called by a watcher when its round ends.</summary>
    internal void WatcherDone(bool wakeLoop)
    {
        if (wakeLoop)
        {
            try
            {
                Signal();
            }
            catch (ObjectDisposedException)
            {
                // The backend was disposed: nothing waits.
            }
        }

        if (Interlocked.Decrement(ref _activeWatchers) == 0)
        {
            lock (_parkGate)
            {
                Monitor.PulseAll(_parkGate);
            }
        }
    }

    /// <summary>Takes <paramref name="e"/> out of the live set. Under the gate.</summary>
    private void Evict(ManagedEntry e)
    {
        if (e.Removed)
        {
            return;
        }

        if (_byKey.TryGetValue(e.Key, out ManagedEntry? current) && ReferenceEquals(current, e))
        {
            _byKey.Remove(e.Key);
        }

        int last = --_liveCount;
        ManagedEntry moved = _live[last];
        _live[e.Index] = moved;
        moved.Index = e.Index;
        _live[last] = null!;
        e.Removed = true;

        // Disposed by the waiting thread at its next snapshot: it may be inside a Select with them now.
        if (e.OwnsSocket)
        {
            _retired.Add(e.Socket);
        }

        if (!ReferenceEquals(e.Poller, e.Socket))
        {
            _retired.Add(e.Poller);
        }

        _dirty = true;
    }

    /// <summary>Blocks until the waiting thread uses a snapshot newer than <paramref name="removedAt"/>, or leaves its wait.</summary>
    private void WaitUntilUnused(long removedAt)
    {
        Interlocked.Increment(ref _removersWaiting);
        try
        {
            lock (_useGate)
            {
                while (Volatile.Read(ref _waitThread) != 0 && Volatile.Read(ref _usedEpoch) <= removedAt)
                {
                    Monitor.Wait(_useGate);
                }
            }
        }
        finally
        {
            Interlocked.Decrement(ref _removersWaiting);
        }
    }

    private static int Remaining(int timeoutMilliseconds, long start)
    {
        if (timeoutMilliseconds <= 0)
        {
            return timeoutMilliseconds;
        }

        long elapsed = (Stopwatch.GetTimestamp() - start) * 1000 / Stopwatch.Frequency;
        long left = timeoutMilliseconds - elapsed;
        return left <= 0 ? 0 : (int)left;
    }

    /// <summary>Wraps a plain handle in a non-owning <see cref="Socket"/>, or explains why it cannot be watched.</summary>
    private static Socket WrapHandle(SafeHandle handle)
    {
        Socket? socket = null;
        try
        {
            socket = ManagedSocketApi.TryWrap(handle.DangerousGetHandle())
                ?? throw new PlatformNotSupportedException(
                    "The managed backend can watch a plain handle only on .NET 5 or later (it wraps the descriptor in a Socket); register the Socket itself.");

            // The constructor accepts a descriptor that is not a socket (it leaves SocketType Unknown); ask the OS.
            _ = socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Type);
            return socket;
        }
        catch (SocketException ex)
        {
            socket?.Dispose();
            throw new ArgumentException(
                "The managed backend watches sockets only, and this handle is not a socket (" + ex.SocketErrorCode.ToString() +
                "): a regular file, pipe, eventfd or other descriptor cannot be polled with managed APIs. Use the epoll or kqueue backend for it.",
                "handle",
                ex);
        }
    }

    /// <summary>A non-owning second <see cref="Socket"/> over <paramref name="socket"/>'s descriptor, for blocking Selects; the socket itself where that is not possible.</summary>
    private static Socket CreatePoller(Socket socket, SafeHandle handle)
    {
        try
        {
            return ManagedSocketApi.TryWrap(handle.DangerousGetHandle()) ?? socket;
        }
        catch (SocketException)
        {
            return socket;
        }
    }

    private void AfterChange()
    {
        // Pairs with the Interlocked.Exchange of _blocking in Wait: either the wait sees _dirty, or this sees _blocking.
        Thread.MemoryBarrier();
        if (Volatile.Read(ref _blocking) != 0)
        {
            Signal();
        }
    }

    private void Signal()
    {
        if (Interlocked.Exchange(ref _signalPending, 1) == 0)
        {
            _wake.Signal();
        }
    }

    /// <summary>Takes a consistent copy of the live entries and applies changed requests to them.</summary>
    private void Refresh()
    {
        long epoch;
        lock (_gate)
        {
            _dirty = false;
            epoch = ++_epoch;
            if (_snapshot.Length < _liveCount)
            {
                _snapshot = new ManagedEntry[Math.Max(_liveCount, _snapshot.Length * 2)];
            }

            Array.Copy(_live, _snapshot, _liveCount);
            if (_snapshotCount > _liveCount)
            {
                Array.Clear(_snapshot, _liveCount, _snapshotCount - _liveCount);
            }

            _snapshotCount = _liveCount;
            for (int i = 0; i < _snapshotCount; i++)
            {
                ManagedEntry e = _snapshot[i];
                if (e.AppliedVersion != e.Version)
                {
                    e.AppliedInterest = e.Interest;
                    e.AppliedMode = e.Mode;
                    e.AppliedVersion = e.Version;
                    e.Armed = true;
                    e.Reported = Readiness.None;
                }
            }

            (_retired, _retiredTaken) = (_retiredTaken, _retired);
        }

        // The previous snapshot's sockets are no longer in any Select: let removers of them go.
        Interlocked.Exchange(ref _usedEpoch, epoch);
        if (Volatile.Read(ref _removersWaiting) != 0)
        {
            lock (_useGate)
            {
                Monitor.PulseAll(_useGate);
            }
        }

        for (int i = 0; i < _retiredTaken.Count; i++)
        {
            _retiredTaken[i].Dispose();
        }

        _retiredTaken.Clear();
        if (_rotor >= _snapshotCount)
        {
            _rotor = 0;
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // Scan: look at every armed entry without blocking, decide what to report.
    // ------------------------------------------------------------------------------------------------------------

    private int Scan(Span<BackendEvent> events)
    {
        int count = _snapshotCount;
        if (count == 0 || events.Length == 0)
        {
            return 0;
        }

        if (_candidates.Length < events.Length)
        {
            _candidates = new ManagedEntry?[events.Length];
            _candidateReadiness = new Readiness[events.Length];
        }

        _candidateCount = 0;
        _candidateLimit = events.Length;

        // Start where the last full batch stopped, so a few always-ready registrations cannot starve the rest.
        int start = _rotor;
        bool full = false;
        for (int p = 0; p < count && !full; p++)
        {
            int i = start + p;
            if (i >= count)
            {
                i -= count;
            }

            ManagedEntry e = _snapshot[i];
            if (e.AppliedMode == TriggerMode.OneShot && !e.Armed && !e.Handle.IsClosed)
            {
                continue;
            }

            int slots = PlanScan(e);
            if (_chunkCount == ManagedSelectSet.Capacity || _scanLists.Count + slots > ManagedSelectSet.Capacity)
            {
                full = FlushChunk(i);
                if (full)
                {
                    break;
                }
            }

            AddToChunk(e, i);
        }

        if (!full)
        {
            FlushChunk(start);
        }

        return Commit(events);
    }

    /// <summary>Which lists the non-blocking look puts <paramref name="e"/> in; returns how many.</summary>
    private static int PlanScan(ManagedEntry e)
    {
        e.HitRead = e.HitWrite = e.HitError = false;
        if (e.Handle.IsClosed)
        {
            e.Dead = true;
        }

        if (e.Dead)
        {
            e.InRead = e.InWrite = e.InError = false;
            return 0;
        }

        // After end of stream readability is known (it cannot go away); otherwise read is watched also for Interest.None,
        // because a hang-up shows there (and, on Windows, a reset). A reset makes a socket readable too, so an entry in the
        // read list needs no error entry: its error is looked up only when it is readable with nothing buffered.
        bool wantRead = (e.AppliedInterest & Interest.Readable) != 0;
        e.InRead = !e.EofSeen;
        e.InWrite = (e.AppliedInterest & Interest.Writable) != 0;
        e.InError = !wantRead || e.EofSeen;
        return (e.InRead ? 1 : 0) + (e.InWrite ? 1 : 0) + (e.InError ? 1 : 0);
    }

    private void AddToChunk(ManagedEntry e, int index)
    {
        _chunk[_chunkCount++] = index;
        if (e.OwnsSocket && !e.Dead)
        {
            // The wrapper polls a raw descriptor number: hold the owner's handle open while it is used, so the number
            // cannot be closed and given to another file meanwhile.
            bool added = false;
            try
            {
                e.Handle.DangerousAddRef(ref added);
            }
            catch (ObjectDisposedException)
            {
            }

            e.HoldsRef = added;
            if (!added)
            {
                e.Dead = true;
                e.InRead = e.InWrite = e.InError = false;
            }
        }

        if (e.InRead)
        {
            _scanLists.Read.Add(e.Socket, e);
        }

        if (e.InWrite)
        {
            _scanLists.Write.Add(e.Socket, e);
        }

        if (e.InError)
        {
            _scanLists.Error.Add(e.Socket, e);
        }
    }

    /// <summary>Selects the chunk without blocking and evaluates its entries; returns whether the batch is full (then <see cref="_rotor"/> says where to go on).</summary>
    private bool FlushChunk(int nextIndex)
    {
        if (_chunkCount == 0)
        {
            return false;
        }

        bool full = false;
        try
        {
            if (_scanLists.Count > 0)
            {
                SelectChunk();
            }

            for (int k = 0; k < _chunkCount; k++)
            {
                if (_candidateCount == _candidateLimit)
                {
                    _rotor = _chunk[k];
                    full = true;
                    break;
                }

                Evaluate(_snapshot[_chunk[k]]);
            }

            if (!full && _candidateCount == _candidateLimit)
            {
                _rotor = nextIndex;
                full = true;
            }
        }
        finally
        {
            ClearChunk();
        }

        return full;
    }

    private void ClearChunk()
    {
        for (int k = 0; k < _chunkCount; k++)
        {
            ManagedEntry e = _snapshot[_chunk[k]];
            if (e.HoldsRef)
            {
                e.HoldsRef = false;
                e.Handle.DangerousRelease();
            }
        }

        _scanLists.Clear();
        _chunkCount = 0;
    }

    private void SelectChunk()
    {
        try
        {
            _scanLists.Select(0);
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException or ArgumentException)
        {
            // One socket spoils the whole call: look at each on its own, to find and retire the culprit.
            ProbeOneByOne();
            return;
        }

        _scanLists.MarkHits();
    }

    private void ProbeOneByOne()
    {
        for (int k = 0; k < _chunkCount; k++)
        {
            ManagedEntry e = _snapshot[_chunk[k]];
            try
            {
                e.HitRead = e.InRead && e.Socket.Poll(0, SelectMode.SelectRead);
                e.HitWrite = e.InWrite && e.Socket.Poll(0, SelectMode.SelectWrite);
                e.HitError = e.InError && e.Socket.Poll(0, SelectMode.SelectError);
            }
            catch (ObjectDisposedException)
            {
                e.Dead = true;
            }
            catch (SocketException)
            {
                e.HitError = true;
            }
        }
    }

    /// <summary>Classifies one entry and applies its trigger mode: adds it to the candidates when it is to be reported.</summary>
    private void Evaluate(ManagedEntry e)
    {
        Readiness present = Classify(e, out int available);
        if (e.Dead)
        {
            // Closed by its owner while registered: the kernel would forget it silently, and so does this backend.
            if (!e.EvictQueued)
            {
                e.EvictQueued = true;
                if (_evictCount == _evict.Length)
                {
                    Array.Resize(ref _evict, _evict.Length * 2);
                }

                _evict[_evictCount++] = e;
            }

            return;
        }

        switch (e.AppliedMode)
        {
            case TriggerMode.Edge:
                // Forget what is gone (so that it is reported when it comes back); report what is new, and readability
                // again when new data arrived since the last look: exactly, by the arrival counter where there is one
                // (Linux TCP), otherwise when the receive queue's byte count changed.
                long arrived = (present & Readiness.Readable) != 0 && e.HitRead ? ReadArrived(e, e.Socket) : -1;
                e.Reported &= present;
                Readiness renewed = present & ~e.Reported;
                if ((present & e.Reported & Readiness.Readable) != 0)
                {
                    if (arrived >= 0 && e.LastArrived >= 0)
                    {
                        if (arrived != e.LastArrived)
                        {
                            renewed |= Readiness.Readable;
                        }
                    }
                    else if (available >= 0 && e.LastAvailable >= 0 && available != e.LastAvailable)
                    {
                        renewed |= Readiness.Readable;
                    }
                }

                e.LastAvailable = available;
                e.LastArrived = arrived;
                if (renewed != Readiness.None)
                {
                    AddCandidate(e, present);
                }

                break;
            default:
                // Level: whatever is present. One-shot: the same, once (disarmed entries are not scanned).
                if (present != Readiness.None)
                {
                    AddCandidate(e, present);
                }

                break;
        }
    }

    private void AddCandidate(ManagedEntry e, Readiness readiness)
    {
        _candidates[_candidateCount] = e;
        _candidateReadiness[_candidateCount] = readiness;
        _candidateCount++;
    }

    /// <summary>
    /// What <paramref name="e"/> is ready for, restricted to its interest plus <see cref="Readiness.Closed"/> and <see cref="Readiness.Error"/>
    /// (reporting anything else would use up a one-shot, or an edge, on readiness the loop then filters out).
    /// </summary>
    /// <param name="e">The entry, with the hit flags of this scan.</param>
    /// <param name="available">The receive queue's byte count; 0 when not readable; -1 when unknown.</param>
    private Readiness Classify(ManagedEntry e, out int available)
    {
        available = -1;
        if (e.Dead)
        {
            return Readiness.None;
        }

        bool wantRead = (e.AppliedInterest & Interest.Readable) != 0;
        Readiness r = Readiness.None;
        if (e.EofSeen)
        {
            available = 0;
            if (wantRead)
            {
                r |= Readiness.Readable | Readiness.ReadClosed;
            }

            if (!e.HitError && SendSideClosed(e))
            {
                r |= Readiness.Closed;
            }
        }
        else if (e.HitRead)
        {
            available = ReadAvailable(e);
            if (available > 0)
            {
                if (wantRead)
                {
                    r |= Readiness.Readable;
                }
                else
                {
                    e.DataPending = true;
                }
            }
            else if (available == 0 && e.IsStream)
            {
                if (!e.InError)
                {
                    // Not in this scan's error list: ask now, before anything reads from the socket.
                    e.HitError = PollError(e);
                }

                r |= ReadableButEmpty(e, wantRead, ref available);
            }
            else if (wantRead)
            {
                // A listener (Available fails there on Linux) or a datagram socket (a zero-length datagram is data).
                r |= Readiness.Readable;
            }
        }
        else if (e.InRead)
        {
            available = e.AvailableUnsupported ? -1 : 0;
            e.DataPending = false;
        }

        if (e.HitError)
        {
            r |= e.IsStream ? Readiness.Error | Readiness.Closed : Readiness.Error;
        }

        if (e.HitWrite)
        {
            r |= Readiness.Writable;
        }

        return e.Dead ? Readiness.None : r;
    }

    /// <summary>Whether an error is pending (POLLERR on Unix), without consuming it as a read or SO_ERROR would.</summary>
    private static bool PollError(ManagedEntry e)
    {
        try
        {
            return e.Socket.Poll(0, SelectMode.SelectError);
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>A stream socket that Select calls readable has nothing buffered: end of stream, a reset, a listener, or nothing.</summary>
    private Readiness ReadableButEmpty(ManagedEntry e, bool wantRead, ref int available)
    {
        Readiness readSide = wantRead ? Readiness.Readable | Readiness.ReadClosed : Readiness.None;
        if (e.HitError)
        {
            // A pending error (a reset): the read side is finished. Do not peek: that would consume the error.
            // (Error and Closed are added by the caller.)
            e.EofSeen = true;
            return readSide;
        }

        if (!e.CanProbe)
        {
            // A wrapper around a plain handle: never read from it. On a stream, readable with nothing buffered and no
            // error pending is end of stream.
            e.EofSeen = true;
            return readSide;
        }

        int n;
        SocketError error;
        try
        {
            n = e.Socket.Receive(_probe, 0, 1, SocketFlags.Peek, out error);
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return Readiness.None;
        }

        switch (error)
        {
            case SocketError.Success when n > 0:
                // Data arrived since Available was read.
                available = -1;
                if (wantRead)
                {
                    return Readiness.Readable;
                }

                e.DataPending = true;
                return Readiness.None;
            case SocketError.Success:
                e.EofSeen = true;
                return SendSideClosed(e) ? readSide | Readiness.Closed : readSide;
            case SocketError.WouldBlock:
                // Spurious: someone else read it first.
                return Readiness.None;
            case SocketError.NotConnected:
                // A listener (Windows) or a socket not yet connected.
                return wantRead ? Readiness.Readable : Readiness.None;
            default:
                e.EofSeen = true;
                return readSide | Readiness.Error | Readiness.Closed;
        }
    }

    private int ReadAvailable(ManagedEntry e)
    {
        if (e.AvailableUnsupported)
        {
            return -1;
        }

        try
        {
            return e.Socket.Available;
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return -1;
        }
        catch (SocketException)
        {
            // FIONREAD on a listening socket fails on Linux (EINVAL). Asked once per registration.
            e.AvailableUnsupported = true;
            return -1;
        }
    }

    /// <summary>
    /// The number of bytes that ever arrived on a Linux TCP connection (<c>tcpi_bytes_received</c> of <c>TCP_INFO</c>, read with
    /// the managed <c>Socket.GetRawSocketOption</c>); -1 where there is no such counter (other systems, Unix sockets,
    /// kernels before 4.1, the netstandard2.0 build). Asked once per registration whether it works.
    /// </summary>
    private long ReadArrived(ManagedEntry e, Socket socket)
    {
        if (e.ArrivalCounter < 0 || !e.IsStream)
        {
            return -1;
        }

        if (e.ArrivalCounter == 0 && !(EpollSharp.Native.Platform.IsLinux && ManagedSocketApi.CanReadRawOption))
        {
            e.ArrivalCounter = -1;
            return -1;
        }

        try
        {
            int length = ManagedSocketApi.GetRawOption(socket, TcpLevel, TcpInfoOption, _tcpInfo);
            if (length < TcpInfoBytesReceivedOffset + sizeof(long))
            {
                e.ArrivalCounter = -1;
                return -1;
            }

            e.ArrivalCounter = 1;
            return MemoryMarshal.Read<long>(_tcpInfo.AsSpan(TcpInfoBytesReceivedOffset));
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return -1;
        }
        catch (SocketException)
        {
            e.ArrivalCounter = -1;
            return -1;
        }
    }

    /// <summary>Whether our own sending side is shut (a zero-byte send fails): with end of stream, that is a full hang-up.</summary>
    private bool SendSideClosed(ManagedEntry e)
    {
        if (e.SendClosed || !e.IsStream || !e.CanProbe)
        {
            return e.SendClosed;
        }

        try
        {
            e.Socket.Send(_probe, 0, 0, SocketFlags.None, out SocketError error);
            if (error is SocketError.Shutdown or SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.NotConnected)
            {
                e.SendClosed = true;
            }
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return true;
        }

        return e.SendClosed;
    }

    /// <summary>Writes the candidates that are still valid (not removed, request unchanged since the snapshot) and applies the mode's bookkeeping.</summary>
    private int Commit(Span<BackendEvent> events)
    {
        if (_candidateCount == 0 && _evictCount == 0)
        {
            return 0;
        }

        int n = 0;
        lock (_gate)
        {
            for (int i = 0; i < _evictCount; i++)
            {
                Evict(_evict[i]);
                _evict[i] = null!;
            }

            _evictCount = 0;
            for (int c = 0; c < _candidateCount; c++)
            {
                ManagedEntry e = _candidates[c]!;
                _candidates[c] = null;
                if (e.Removed || e.Version != e.AppliedVersion)
                {
                    // Removed: never report. Changed: the next wait applies the change and looks again.
                    continue;
                }

                Readiness readiness = _candidateReadiness[c];
                events[n].Token = e.Token;
                events[n].Readiness = readiness;
                n++;
                if (e.AppliedMode == TriggerMode.OneShot)
                {
                    e.Armed = false;
                }
                else if (e.AppliedMode == TriggerMode.Edge)
                {
                    e.Reported = readiness;
                }
            }
        }

        _candidateCount = 0;
        return n;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Block: sleep in Select until something that would be reported may have happened.
    // ------------------------------------------------------------------------------------------------------------

    private void Block(int timeoutMilliseconds)
    {
        ClearChunk();
        _staleCount = 0;
        _own.Clear();
        ManagedSelectSet group = _own;
        group.Read.Add(_wake.Receiver);
        int used = 1;
        int groups = 0;
        for (int i = 0; i < _snapshotCount; i++)
        {
            ManagedEntry e = _snapshot[i];
            if (!PlanBlock(e, out bool r, out bool w, out bool x))
            {
                continue;
            }

            if (IsStaleEdge(e))
            {
                AddStale(e);
            }

            int need = (r ? 1 : 0) + (w ? 1 : 0) + (x ? 1 : 0);
            if (used + need > ManagedSelectSet.Capacity)
            {
                group = WatcherAt(groups++).Lists;
                group.Clear();
                group.Read.Add(_recall!.Receiver);
                used = 1;
            }

            Socket poller = e.Poller;
            if (r)
            {
                group.Read.Add(poller);
            }

            if (w)
            {
                group.Write.Add(poller);
            }

            if (x)
            {
                group.Error.Add(poller);
            }

            used += need;
        }

        if (groups > 0)
        {
            Volatile.Write(ref _activeWatchers, groups);
            for (int g = 0; g < groups; g++)
            {
                _watchers[g].Go();
            }
        }

        bool drainWake = false;
        try
        {
            drainWake = SelectOwnGroup(timeoutMilliseconds);
        }
        catch (Exception ex) when (ex is SocketException or ArgumentException || (ex is ObjectDisposedException && !IsDisposed()))
        {
            // A registered socket spoils the Select; the next scan probes them one by one and retires it. Pause a
            // little so that a persistent fault cannot become a busy loop.
            drainWake = true;
            Thread.Sleep(1);
        }
        finally
        {
            if (groups > 0)
            {
                _recall!.Signal();
                lock (_parkGate)
                {
                    while (Volatile.Read(ref _activeWatchers) != 0)
                    {
                        Monitor.Wait(_parkGate);
                    }
                }

                _recall.Drain();
                for (int g = 0; g < groups; g++)
                {
                    _watchers[g].Lists.Clear();
                }
            }

            _own.Clear();
            Array.Clear(_stale, 0, _staleCount);
        }

        if (drainWake)
        {
            // Drain first, then clear the flag: a signal whose byte this drain took has set its request flag already,
            // so the wait loop sees it; a signal after the clear sends a new byte.
            _wake.Drain();
            Interlocked.Exchange(ref _signalPending, 0);
        }
    }

    /// <summary>
    /// Selects on the loop's own group until something is ready or the timeout passes, in slices: every
    /// <see cref="StaleCheckMilliseconds"/> while edge registrations hold undrained data (has their byte count changed?),
    /// otherwise every <see cref="ClosedCheckMilliseconds"/> (was a registered handle closed? A descriptor closed while a
    /// poll sleeps on it stays open in the kernel until the poll returns). Returns whether the wake socket was ready.
    /// </summary>
    private bool SelectOwnGroup(int timeoutMilliseconds)
    {
        long start = Stopwatch.GetTimestamp();
        int remaining = timeoutMilliseconds;
        while (true)
        {
            int cap = _staleCount > 0 ? StaleCheckMilliseconds : ClosedCheckMilliseconds;
            int slice = remaining < 0 || remaining > cap ? cap : remaining;
            _own.Select(slice * 1000);
            if (_own.ReadyCount > 0)
            {
                return _own.Read.Sockets.Count > 0 && ReferenceEquals(_own.Read.Sockets[0], _wake.Receiver);
            }

            remaining = Remaining(timeoutMilliseconds, start);
            if (remaining == 0 || (_staleCount > 0 && StaleChanged()) || AnyHandleClosed())
            {
                return false;
            }

            _own.Refill();
        }
    }

    /// <summary>Whether a registered handle was closed by its owner (then the wait ends, so the scan can drop it and the watchers let go of it).</summary>
    private bool AnyHandleClosed()
    {
        for (int i = 0; i < _snapshotCount; i++)
        {
            ManagedEntry e = _snapshot[i];
            if (!e.Dead && e.Handle.IsClosed)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// An edge registration whose readability was reported and is still present (the data was not drained): new data
    /// would not make Select return, so its byte count is re-read while the loop sleeps. A listener has no byte count.
    /// </summary>
    private static bool IsStaleEdge(ManagedEntry e) =>
        e.AppliedMode == TriggerMode.Edge
        && (e.AppliedInterest & Interest.Readable) != 0
        && (e.Reported & Readiness.Readable) != 0
        && !e.EofSeen
        && (e.LastArrived >= 0 || (!e.AvailableUnsupported && e.LastAvailable >= 0));

    private void AddStale(ManagedEntry e)
    {
        if (_staleCount == _stale.Length)
        {
            Array.Resize(ref _stale, _stale.Length * 2);
        }

        _stale[_staleCount++] = e;
    }

    /// <summary>Whether the byte count of a stale edge registration changed (or can no longer be read): then rescan.</summary>
    private bool StaleChanged()
    {
        for (int i = 0; i < _staleCount; i++)
        {
            ManagedEntry e = _stale[i];
            if (e.Handle.IsClosed)
            {
                return true;
            }

            try
            {
                if (e.LastArrived >= 0 ? ReadArrived(e, e.Poller) != e.LastArrived : e.Poller.Available != e.LastAvailable)
                {
                    return true;
                }
            }
            catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Which lists the blocking Select puts <paramref name="e"/> in: only conditions whose appearance would be reported.
    /// Returns false when there are none (a disarmed one-shot, a disposed socket, an edge registration with all reported).
    /// </summary>
    private static bool PlanBlock(ManagedEntry e, out bool read, out bool write, out bool error)
    {
        read = write = error = false;
        if (e.Dead || (e.AppliedMode == TriggerMode.OneShot && !e.Armed))
        {
            return false;
        }

        bool wantRead = (e.AppliedInterest & Interest.Readable) != 0;
        bool wantWrite = (e.AppliedInterest & Interest.Writable) != 0;

        // Interest.None watches read for a hang-up, but not while unread data keeps the socket readable.
        read = !e.EofSeen && (wantRead ? (e.Reported & Readiness.Readable) == 0 : !e.DataPending);
        write = wantWrite && (e.Reported & Readiness.Writable) == 0;

        // Resets make a socket readable; one left out of the read list still needs the error list to hear of them.
        error = !read && (e.Reported & Readiness.Error) == 0;
        return read || write || error;
    }

    private ManagedWatcher WatcherAt(int index)
    {
        while (_watchers.Count <= index)
        {
            _recall ??= ManagedSignalSocket.Create();
            _watchers.Add(new ManagedWatcher(this, _watchers.Count + 1));
        }

        return _watchers[index];
    }

    private bool IsDisposed()
    {
        lock (_gate)
        {
            return _disposed;
        }
    }
}
