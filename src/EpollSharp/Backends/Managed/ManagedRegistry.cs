using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>
/// The managed backend's registrations: the live entries by handle value, their requested interest and mode, the sockets
/// retired by removals, and the epoch that tells which snapshot a removal is in. Add, Modify and Remove come from any thread;
/// the waiting thread takes snapshots and commits reports.
/// </summary>
/// <remarks>
/// <para><b>Owner and rule.</b> This type is the only owner of <c>_byKey</c>, <c>_live</c>, <c>_liveCount</c>, <c>_retired</c>,
/// <c>_disposed</c>, <c>_epoch</c> and of every entry's requested fields (<see cref="ManagedEntry.Interest"/>,
/// <see cref="ManagedEntry.Mode"/>, <see cref="ManagedEntry.Version"/>, <see cref="ManagedEntry.Removed"/>,
/// <see cref="ManagedEntry.Index"/>). All of them are read and written only under the private lock <c>_gate</c>. Two
/// exceptions: <c>_dirty</c> is set under the gate but is volatile, so the waiting thread can ask <see cref="IsDirty"/>
/// without it; and <c>_retiredTaken</c> belongs to the waiting thread (it is swapped with <c>_retired</c> under the gate, then
/// disposed outside it). The gate is held only for copies and field writes, never around a system call or another lock.</para>
/// <para>A report is committed under the gate, and only for an entry that was not removed and whose request did not change
/// since the snapshot it was scanned in, so nothing is reported after Remove returned.</para>
/// </remarks>
internal sealed class ManagedRegistry
{
    private readonly object _gate = new();
    private readonly Dictionary<IntPtr, ManagedEntry> _byKey = new();
    private ManagedEntry[] _live = new ManagedEntry[16];
    private int _liveCount;
    private List<Socket> _retired = new();
    private List<Socket> _retiredTaken = new();
    private bool _disposed;

    /// <summary>A registration changed since the last snapshot.</summary>
    private volatile bool _dirty = true;

    /// <summary>Incremented by every snapshot; an entry removed at epoch E is in no snapshot after E.</summary>
    private long _epoch;

    /// <summary>Whether a registration changed since the last snapshot. No lock.</summary>
    public bool IsDirty => _dirty;

    /// <summary>Whether <see cref="Close"/> was called.</summary>
    public bool IsDisposed
    {
        get
        {
            lock (_gate)
            {
                return _disposed;
            }
        }
    }

    /// <summary>Registers <paramref name="entry"/>. Any thread.</summary>
    /// <exception cref="ObjectDisposedException">The backend was disposed.</exception>
    /// <exception cref="ArgumentException">The handle is registered already (and open).</exception>
    public void Add(ManagedEntry entry, Interest interest, TriggerMode mode)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (_byKey.TryGetValue(entry.Key, out ManagedEntry? existing))
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
            _byKey.Add(entry.Key, entry);
            _dirty = true;
        }
    }

    /// <summary>Changes the request of the entry of <paramref name="key"/>; also re-arms it. Any thread.</summary>
    /// <exception cref="ObjectDisposedException">The backend was disposed.</exception>
    /// <exception cref="ArgumentException">No entry of that handle and token.</exception>
    public void Modify(IntPtr key, ulong token, Interest interest, TriggerMode mode)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (!_byKey.TryGetValue(key, out ManagedEntry? entry) || entry.Token != token)
            {
                throw new ArgumentException("The handle is not registered with this event loop.", "handle");
            }

            entry.Interest = interest;
            entry.Mode = mode;
            entry.Version++;
            _dirty = true;
        }
    }

    /// <summary>Removes the entry of <paramref name="handle"/>; false when there is none (or the backend was disposed). Any thread.</summary>
    /// <param name="handle">The registered handle.</param>
    /// <param name="removedAt">The epoch of the removal: no snapshot after it holds the entry.</param>
    public bool Remove(SafeHandle handle, out long removedAt)
    {
        IntPtr key = handle.DangerousGetHandle();
        lock (_gate)
        {
            removedAt = _epoch;
            if (_disposed || !_byKey.TryGetValue(key, out ManagedEntry? entry) || !ReferenceEquals(entry.Handle, handle))
            {
                return false;
            }

            Evict(entry);
            removedAt = _epoch;
            return true;
        }
    }

    /// <summary>
    /// Copies the live entries into <paramref name="snapshot"/>, applies changed requests to them, and takes the sockets
    /// retired since the last snapshot (<see cref="DisposeRetired"/> disposes them). Returns the snapshot's epoch. The waiting thread.
    /// </summary>
    public long TakeSnapshot(ManagedSnapshot snapshot)
    {
        lock (_gate)
        {
            _dirty = false;
            long epoch = ++_epoch;
            snapshot.CopyFrom(_live, _liveCount);
            for (int i = 0; i < snapshot.Count; i++)
            {
                ManagedEntry e = snapshot[i];
                if (e.AppliedVersion != e.Version)
                {
                    ManagedTrigger.ApplyRequest(e);
                }
            }

            (_retired, _retiredTaken) = (_retiredTaken, _retired);
            return epoch;
        }
    }

    /// <summary>Disposes the sockets <see cref="TakeSnapshot"/> took: no Select uses them now. The waiting thread.</summary>
    public void DisposeRetired()
    {
        for (int i = 0; i < _retiredTaken.Count; i++)
        {
            _retiredTaken[i].Dispose();
        }

        _retiredTaken.Clear();
    }

    /// <summary>
    /// Drops the entries the scan found closed, then writes the candidates that are still valid (not removed, request
    /// unchanged since the snapshot) to <paramref name="events"/> and applies the mode's bookkeeping. Returns how many were
    /// written. The waiting thread.
    /// </summary>
    public int Commit(ManagedScanResult result, Span<BackendEvent> events)
    {
        if (result.CandidateCount == 0 && result.EvictCount == 0)
        {
            return 0;
        }

        int n = 0;
        lock (_gate)
        {
            for (int i = 0; i < result.EvictCount; i++)
            {
                Evict(result.TakeEvicted(i));
            }

            result.ClearEvicted();
            for (int c = 0; c < result.CandidateCount; c++)
            {
                ManagedEntry e = result.TakeCandidate(c, out Readiness readiness);
                if (e.Removed || e.Version != e.AppliedVersion)
                {
                    // Removed: never report. Changed: the next wait applies the change and looks again.
                    continue;
                }

                events[n].Token = e.Token;
                events[n].Readiness = readiness;
                n++;
                ManagedTrigger.Committed(e, readiness);
            }
        }

        result.ClearCandidates();
        return n;
    }

    /// <summary>Marks the registry disposed and removes every entry; returns the sockets to dispose, null when it was disposed already.</summary>
    public List<Socket>? Close()
    {
        var owned = new List<Socket>();
        lock (_gate)
        {
            if (_disposed)
            {
                return null;
            }

            _disposed = true;
            for (int i = 0; i < _liveCount; i++)
            {
                _live[i].Removed = true;
                AddOwned(_live[i], owned);
                _live[i] = null!;
            }

            _liveCount = 0;
            _byKey.Clear();
            owned.AddRange(_retired);
            _retired.Clear();
        }

        return owned;
    }

    private static void AddOwned(ManagedEntry e, List<Socket> into)
    {
        if (e.OwnedSocket is { } socket)
        {
            into.Add(socket);
        }
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            throw new ObjectDisposedException(nameof(ManagedBackend));
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
        AddOwned(e, _retired);
        _dirty = true;
    }
}
