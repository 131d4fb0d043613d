using System;
using System.Net.Sockets;

namespace EpollSharp.Backends;

/// <summary>
/// The scan: looks at every armed entry of the snapshot without blocking, in chunks of at most
/// <see cref="ManagedSelectSet.Capacity"/> list entries (one non-blocking Socket.Select per chunk), classifies what each is
/// ready for (<see cref="ManagedReadinessProbe"/>), applies its trigger mode (<see cref="ManagedTrigger"/>, with the
/// <see cref="ManagedArrivalCounter"/> for edge entries), and fills a
/// <see cref="ManagedScanResult"/>. Cost: O(registrations) per wait.
/// </summary>
/// <remarks>
/// <b>Owner and rule.</b> Used only by the thread in <see cref="ManagedBackend.Wait"/>, which owns everything here: the chunk,
/// its select lists, the rotor, and the entries' scratch fields (<see cref="ManagedEntry.InRead"/> ... <see cref="ManagedEntry.HitError"/>,
/// <see cref="ManagedEntry.HoldsRef"/>). No lock. While a chunk is selected the scan holds a reference on the handle of every
/// entry whose socket is the backend's own wrapper (released when the chunk is cleared).
/// </remarks>
internal sealed class ManagedScan
{
    private readonly ManagedSnapshot _snapshot;
    private readonly ManagedReadinessProbe _probe = new();
    private readonly ManagedArrivalCounter _arrivals;
    private readonly ManagedScanResult _result;
    private readonly ManagedSelectSet _lists = new();

    /// <summary>The snapshot indices of the chunk's entries.</summary>
    private readonly int[] _chunk = new int[ManagedSelectSet.Capacity];
    private int _chunkCount;

    /// <summary>Where the next scan starts: where the last full batch stopped.</summary>
    private int _rotor;

    /// <summary>A scan of <paramref name="snapshot"/> that reads arrival counters with <paramref name="arrivals"/> and writes to <paramref name="result"/>.</summary>
    public ManagedScan(ManagedSnapshot snapshot, ManagedArrivalCounter arrivals, ManagedScanResult result)
    {
        _snapshot = snapshot;
        _arrivals = arrivals;
        _result = result;
    }

    /// <summary>A new snapshot was taken: a rotor past its end starts over.</summary>
    public void SnapshotTaken()
    {
        if (_rotor >= _snapshot.Count)
        {
            _rotor = 0;
        }
    }

    /// <summary>Scans the snapshot for at most <paramref name="limit"/> reports; the result is in the <see cref="ManagedScanResult"/>.</summary>
    public void Run(int limit)
    {
        int count = _snapshot.Count;
        if (count == 0 || limit == 0)
        {
            return;
        }

        _result.Start(limit);

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
            if (_chunkCount == ManagedSelectSet.Capacity || _lists.Count + slots > ManagedSelectSet.Capacity)
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
    public void ClearChunk()
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

        _lists.Clear();
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
            _lists.Read.Add(e.Socket, e);
        }

        if (e.InWrite)
        {
            _lists.Write.Add(e.Socket, e);
        }

        if (e.InError)
        {
            _lists.Error.Add(e.Socket, e);
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
            if (_lists.Count > 0)
            {
                SelectChunk();
            }

            for (int k = 0; k < _chunkCount; k++)
            {
                if (_result.IsFull)
                {
                    _rotor = _chunk[k];
                    full = true;
                    break;
                }

                Evaluate(_snapshot[_chunk[k]]);
            }

            if (!full && _result.IsFull)
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
            _lists.Select(0);
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException or ArgumentException)
        {
            // One socket spoils the whole call: look at each on its own, to find and retire the culprit.
            ProbeOneByOne();
            return;
        }

        _lists.MarkHits();
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
        Readiness present = _probe.Classify(e, out int available);
        if (e.Dead)
        {
            // Closed by its owner while registered: the kernel would forget it silently, and so does this backend.
            _result.QueueEvict(e);
            return;
        }

        long arrived = e.AppliedMode == TriggerMode.Edge && (present & Readiness.Readable) != 0 && e.HitRead
            ? _arrivals.Read(e, e.Socket)
            : -1;
        if (ManagedTrigger.ShouldReport(e, present, available, arrived))
        {
            _result.AddCandidate(e, present);
        }
    }
}
