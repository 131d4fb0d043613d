using System;
using System.Diagnostics;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// The blocking step of a wait: a Socket.Select with the (remaining) timeout on the wake socket plus every entry whose
/// <i>next change</i> would be reported, in groups of at most <see cref="ManagedSelectSet.Capacity"/> list entries: the loop
/// thread selects on the first, a <see cref="ManagedWatcher"/> on each further one. It reports nothing itself: when it
/// returns, for whatever reason, the wait scans again.
/// </summary>
/// <remarks>
/// <para>Readiness that is present but must not be reported now (already reported in edge mode, outside the interest, a disarmed
/// one-shot, unread data under Interest.None) is left out, so the Select cannot return at once over and over. The Selects use
/// each entry's <see cref="ManagedEntry.Poller"/>, so a sleeping wait holds no reference on a registered handle.</para>
/// <para><b>Owner and rule.</b> Used only by the thread in <see cref="ManagedBackend.Wait"/>, between
/// <see cref="ManagedWakeup.AnnounceBlock"/> and <see cref="ManagedWakeup.EndBlock"/>; it owns the loop's own select lists and
/// the list of stale edge entries. No lock of its own: the watchers' lists are handed over by <see cref="ManagedWatcherPool"/>.</para>
/// </remarks>
internal sealed class ManagedBlock
{
    /// <summary>How often a sleeping wait looks for registered handles closed by their owners.</summary>
    internal const int ClosedCheckMilliseconds = 500;

    /// <summary>How often a sleeping wait re-reads the byte count of edge registrations that hold undrained data.</summary>
    internal const int StaleCheckMilliseconds = 10;

    private readonly ManagedSnapshot _snapshot;
    private readonly ManagedArrivalCounter _arrivals;
    private readonly ManagedWakeup _wakeup;
    private readonly ManagedWatcherPool _watchers;
    private readonly ManagedRegistry _registry;

    /// <summary>The loop's own group, kept across the slices of one Select (Select empties the lists).</summary>
    private readonly ManagedSelectSet _own = new();

    /// <summary>Edge entries with undrained data (<see cref="ManagedTrigger.IsStaleEdge"/>), whose counters are re-read while the loop sleeps.</summary>
    private ManagedEntry[] _stale = new ManagedEntry[16];
    private int _staleCount;

    /// <summary>The blocking step over <paramref name="snapshot"/>.</summary>
    public ManagedBlock(ManagedSnapshot snapshot, ManagedArrivalCounter arrivals, ManagedWakeup wakeup, ManagedWatcherPool watchers, ManagedRegistry registry)
    {
        _snapshot = snapshot;
        _arrivals = arrivals;
        _wakeup = wakeup;
        _watchers = watchers;
        _registry = registry;
    }

    /// <summary>Sleeps until something that would be reported may have happened, the wake socket is signalled, or <paramref name="timeoutMilliseconds"/> pass.</summary>
    public void Run(int timeoutMilliseconds)
    {
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

            remaining = ManagedBackend.Remaining(timeoutMilliseconds, start);
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
                if (e.LastArrived >= 0 ? _arrivals.Read(e, e.Poller) != e.LastArrived : e.Poller.Available != e.LastAvailable)
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
