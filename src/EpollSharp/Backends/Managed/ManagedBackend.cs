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
/// This type is the facade: it implements <see cref="IPollBackend"/> and runs the wait loop; each job is its own type in this folder.
/// </summary>
/// <remarks>
/// <para><b>A wait</b> repeats, until it has something to report, is woken, or times out:</para>
/// <list type="number">
/// <item>Apply the registrations changed since the last wait: <see cref="ManagedRegistry.TakeSnapshot"/> copies them, under the
///   registry's gate, into the <see cref="ManagedSnapshot"/>, so the rest runs without it.</item>
/// <item><b>Scan</b>: non-blocking Selects over every armed registration, at most
///   <see cref="ManagedSelectSet.Capacity"/> list entries each (Socket.Select allocates its poll array from 80 on), then classify
///   what each is ready for and apply its trigger mode (<see cref="ManagedTrigger"/>);
///   <see cref="ManagedRegistry.Commit"/> reports what is still valid. Cost: O(registrations) per wait.</item>
/// <item><b>Block</b>: a Select with the timeout on the wake socket plus every registration whose next
///   change would be reported; groups beyond the first are selected by the <see cref="ManagedWatcherPool"/>'s threads.</item>
/// </list>
/// <para><b>Threads.</b> <see cref="Add"/>, <see cref="Modify"/> and <see cref="Remove"/> change the <see cref="ManagedRegistry"/>
///   under its gate; when the wait is blocked, <see cref="ManagedWakeup"/> signals the wake socket, so it restarts with the change.
///   <see cref="Remove"/> from another thread returns once the waiting thread no longer uses the socket (<see cref="ManagedRemoveBarrier"/>).
///   Every piece of shared state has one owner, which states its locking rule: the registry (its gate), the wake-up
///   (interlocked flags), the remove barrier (interlocked fields and its own monitor), the watcher pool (its park monitor).
///   Everything else (snapshot, scan and its result, probing, block) belongs to the waiting thread.</para>
/// </remarks>
internal sealed class ManagedBackend : IPollBackend
{
    private readonly ManagedRegistry _registry = new();
    private readonly ManagedWakeup _wakeup;
    private readonly ManagedRemoveBarrier _removeBarrier = new();
    private readonly ManagedWatcherPool _watchers;
    private readonly ManagedSnapshot _snapshot = new();
    private readonly ManagedScanResult _scanResult;

    /// <summary>A backend that reports up to <paramref name="maxEvents"/> events per wait without growing.</summary>
    /// <exception cref="PlatformNotSupportedException">No loopback TCP connection can be made (the backend wakes itself through one).</exception>
    public ManagedBackend(int maxEvents)
    {
        _wakeup = new ManagedWakeup();
        _watchers = new ManagedWatcherPool(_wakeup);
        _scanResult = new ManagedScanResult(maxEvents);
    }

    /// <inheritdoc/>
    public EventLoopBackend Kind => EventLoopBackend.Managed;

    /// <summary>How many watcher threads exist (for tests and measurements).</summary>
    internal int WatcherCount => _watchers.Count;

    /// <inheritdoc/>
    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        ManagedEntry entry = ManagedEntry.Create(target, token);
        try
        {
            _registry.Add(entry, interest, mode);
        }
        catch
        {
            entry.OwnedSocket?.Dispose();
            throw;
        }

        _wakeup.AfterChange();
    }

    /// <inheritdoc/>
    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        _registry.Modify(target.Handle.DangerousGetHandle(), token, interest, mode);
        _wakeup.AfterChange();
    }

    /// <summary>
    /// Stops watching. From a thread other than the waiting one this returns only once the waiting thread no longer uses
    /// the socket (at most one scan, or a wake-up, later): .NET's <see cref="Socket.Dispose()"/> resets the connection
    /// instead of closing it gracefully when another thread holds a reference on the socket at that moment, and a
    /// socket is typically disposed right after its registration.
    /// </summary>
    public void Remove(BackendTarget target)
    {
        if (!_registry.Remove(target.Handle, out long removedAt))
        {
            return;
        }

        // Wake a blocked wait even though nothing is to be reported: it must move to a snapshot without this socket.
        _wakeup.AfterChange();
        _removeBarrier.WaitUntilUnused(removedAt);
    }

    /// <inheritdoc/>
    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        _removeBarrier.Enter();
        try
        {
            return WaitCore(events, timeoutMilliseconds);
        }
        finally
        {
            _removeBarrier.Leave();
        }
    }

    /// <inheritdoc/>
    public void Wake() => _wakeup.Wake();

    /// <inheritdoc/>
    public void Dispose()
    {
        List<Socket>? owned = _registry.Close();
        if (owned is null)
        {
            return;
        }

        _watchers.Dispose();
        _wakeup.Dispose();
        foreach (Socket socket in owned)
        {
            socket.Dispose();
        }

        _registry.DisposeRetired();
        _snapshot.Clear();
    }

    /// <summary>What is left of <paramref name="timeoutMilliseconds"/> since <paramref name="start"/> (a <see cref="Stopwatch"/> timestamp); a timeout of 0 or -1 as it is.</summary>
    internal static int Remaining(int timeoutMilliseconds, long start)
    {
        if (timeoutMilliseconds <= 0)
        {
            return timeoutMilliseconds;
        }

        long elapsed = (Stopwatch.GetTimestamp() - start) * 1000 / Stopwatch.Frequency;
        long left = timeoutMilliseconds - elapsed;
        return left <= 0 ? 0 : (int)left;
    }

    private int WaitCore(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        while (true)
        {
            if (_registry.IsDirty)
            {
                Refresh();
            }

            Scan(events.Length);
            int n = _registry.Commit(_scanResult, events);
            if (n > 0)
            {
                return n;
            }

            if (_wakeup.TakeRequest())
            {
                return 0;
            }

            int remaining = Remaining(timeoutMilliseconds, start);
            if (remaining == 0)
            {
                return 0;
            }

            // Announce the block, then look once more: a change or wake made before this point is seen here; one made
            // after it sees the announcement and signals the wake socket (full fences on both sides: one must see the other).
            _wakeup.AnnounceBlock();
            try
            {
                if (_registry.IsDirty || _wakeup.IsRequested)
                {
                    continue;
                }

                Block(remaining);
            }
            finally
            {
                _wakeup.EndBlock();
            }
        }
    }

    /// <summary>Moves the wait to a new snapshot of the registry, then disposes the sockets no snapshot holds any more.</summary>
    private void Refresh()
    {
        long epoch = _registry.TakeSnapshot(_snapshot);

        // The previous snapshot's sockets are no longer in any Select: let removers of them go.
        _removeBarrier.Use(epoch);
        _registry.DisposeRetired();
        SnapshotTaken();
    }

    // ------------------------------------------------------------------------------------------------------------
    // Scan: look at every armed entry without blocking, decide what to report.
    // ------------------------------------------------------------------------------------------------------------

    private readonly ManagedSelectSet _scanLists = new();

    /// <summary>The snapshot indices of the chunk's entries.</summary>
    private readonly int[] _chunk = new int[ManagedSelectSet.Capacity];
    private int _chunkCount;

    /// <summary>Where the next scan starts: where the last full batch stopped.</summary>
    private int _rotor;

    /// <summary>A new snapshot was taken: a rotor past its end starts over.</summary>
    private void SnapshotTaken()
    {
        if (_rotor >= _snapshot.Count)
        {
            _rotor = 0;
        }
    }

    /// <summary>Scans the snapshot for at most <paramref name="limit"/> reports; the result is in the <see cref="ManagedScanResult"/>.</summary>
    private void Scan(int limit)
    {
        int count = _snapshot.Count;
        if (count == 0 || limit == 0)
        {
            return;
        }

        _scanResult.Start(limit);

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
            if (ManagedTrigger.IsDisarmed(e) && !e.Handle.IsClosed)
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
    }

    /// <summary>Empties the chunk: releases the handle references it holds and clears its lists.</summary>
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
                if (_scanResult.IsFull)
                {
                    _rotor = _chunk[k];
                    full = true;
                    break;
                }

                Evaluate(_snapshot[_chunk[k]]);
            }

            if (!full && _scanResult.IsFull)
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
            _scanResult.QueueEvict(e);
            return;
        }

        long arrived = e.AppliedMode == TriggerMode.Edge && (present & Readiness.Readable) != 0 && e.HitRead
            ? ReadArrived(e, e.Socket)
            : -1;
        if (ManagedTrigger.ShouldReport(e, present, available, arrived))
        {
            _scanResult.AddCandidate(e, present);
        }
    }


    // ------------------------------------------------------------------------------------------------------------
    // Readiness: what a registration is ready for.
    // ------------------------------------------------------------------------------------------------------------

    private readonly byte[] _probe = new byte[1];

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

    /// <summary>The receive queue's byte count; -1 when it cannot be read (a listener on Linux, a closed socket).</summary>
    private static int ReadAvailable(ManagedEntry e)
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


    // ------------------------------------------------------------------------------------------------------------
    // The arrival counter of edge mode.
    // ------------------------------------------------------------------------------------------------------------

    /// <summary>Linux: <c>IPPROTO_TCP</c>.</summary>
    internal const int TcpLevel = 6;

    /// <summary>Linux: <c>TCP_INFO</c>.</summary>
    internal const int TcpInfoOption = 11;

    /// <summary>Linux: offset of <c>__u64 tcpi_bytes_received</c> in <c>struct tcp_info</c> (since 4.1; the struct only grows at its end).</summary>
    internal const int TcpInfoBytesReceivedOffset = 128;

    /// <summary>Room for <c>struct tcp_info</c> of current kernels (the kernel copies at most this much).</summary>
    private const int TcpInfoLength = 512;

    private readonly byte[] _tcpInfo = new byte[TcpInfoLength];

    /// <summary>
    /// The number of bytes that ever arrived on a Linux TCP connection (<c>tcpi_bytes_received</c> of <c>TCP_INFO</c>, read with
    /// the managed <c>Socket.GetRawSocketOption</c>); -1 where there is no such counter (other systems, Unix sockets,
    /// kernels before 4.1, the netstandard2.0 build). Asked once per registration whether it works.
    /// </summary>
    /// <param name="e">The entry.</param>
    /// <param name="socket">Which of its sockets to ask: the registered one in a scan, the poller while the loop sleeps.</param>
    internal long ReadArrived(ManagedEntry e, Socket socket)
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


    // ------------------------------------------------------------------------------------------------------------
    // Block: sleep in Select until something that would be reported may have happened.
    // ------------------------------------------------------------------------------------------------------------

    /// <summary>How often a sleeping wait looks for registered handles closed by their owners.</summary>
    internal const int ClosedCheckMilliseconds = 500;

    /// <summary>How often a sleeping wait re-reads the byte count of edge registrations that hold undrained data.</summary>
    internal const int StaleCheckMilliseconds = 10;


    /// <summary>The loop's own group, kept across the slices of one Select (Select empties the lists).</summary>
    private readonly ManagedSelectSet _own = new();

    /// <summary>Edge entries with undrained data (<see cref="ManagedTrigger.IsStaleEdge"/>), whose counters are re-read while the loop sleeps.</summary>
    private ManagedEntry[] _stale = new ManagedEntry[16];
    private int _staleCount;

    /// <summary>Sleeps until something that would be reported may have happened, the wake socket is signalled, or <paramref name="timeoutMilliseconds"/> pass.</summary>
    private void Block(int timeoutMilliseconds)
    {
        ClearChunk();
        _staleCount = 0;
        _own.Clear();
        ManagedSelectSet group = _own;
        group.Read.Add(_wakeup.Receiver);
        int used = 1;
        int groups = 0;
        for (int i = 0; i < _snapshot.Count; i++)
        {
            ManagedEntry e = _snapshot[i];
            if (!PlanBlock(e, out bool r, out bool w, out bool x))
            {
                continue;
            }

            if (ManagedTrigger.IsStaleEdge(e))
            {
                AddStale(e);
            }

            int need = (r ? 1 : 0) + (w ? 1 : 0) + (x ? 1 : 0);
            if (used + need > ManagedSelectSet.Capacity)
            {
                group = _watchers.StartGroup(groups++);
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
            _watchers.Release(groups);
        }

        bool drainWake = false;
        try
        {
            drainWake = SelectOwnGroup(timeoutMilliseconds);
        }
        catch (Exception ex) when (ex is SocketException or ArgumentException || (ex is ObjectDisposedException && !_registry.IsDisposed))
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
                _watchers.Recall(groups);
            }

            _own.Clear();
            Array.Clear(_stale, 0, _staleCount);
        }

        if (drainWake)
        {
            _wakeup.Drain();
        }
    }

    /// <summary>
    /// Which lists the blocking Select puts <paramref name="e"/> in: only conditions whose appearance would be reported.
    /// Returns false when there are none (a disarmed one-shot, a disposed socket, an edge registration with all reported).
    /// </summary>
    private static bool PlanBlock(ManagedEntry e, out bool read, out bool write, out bool error)
    {
        read = write = error = false;
        if (e.Dead || ManagedTrigger.IsDisarmed(e))
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
                return _own.Read.Sockets.Count > 0 && ReferenceEquals(_own.Read.Sockets[0], _wakeup.Receiver);
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
        for (int i = 0; i < _snapshot.Count; i++)
        {
            ManagedEntry e = _snapshot[i];
            if (!e.Dead && e.Handle.IsClosed)
            {
                return true;
            }
        }

        return false;
    }

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
}
