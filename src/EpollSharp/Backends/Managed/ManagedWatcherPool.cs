using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// The <see cref="ManagedWatcher"/> threads of one backend, the recall socket that ends their Selects, and the park protocol
/// of a blocking round: the loop hands out groups (<see cref="StartGroup"/>), releases them (<see cref="Release"/>), and once
/// its own Select returned recalls them (<see cref="Recall"/>) and waits until every one has parked.
/// </summary>
/// <remarks>
/// <para><b>Owner and rule.</b> This type is the only owner of the watcher list, the recall socket and the count of watchers still
/// selecting (<c>_activeWatchers</c>). The list and the recall socket are touched only by the thread in
/// <see cref="ManagedBackend.Wait"/> (and by <see cref="Dispose"/>). <c>_activeWatchers</c> is set by the waiting thread before
/// it releases a round and decremented with <see cref="Interlocked"/> by each watcher as it parks; the last one pulses the
/// private monitor <c>_parkGate</c>, on which <see cref="Recall"/> waits. (A plain monitor: a ManualResetEventSlim allocates
/// its lock the first time it blocks.) A watcher's lists belong to the watcher from <see cref="Release"/> until it parks,
/// to the waiting thread otherwise.</para>
/// </remarks>
internal sealed class ManagedWatcherPool : IDisposable
{
    private readonly ManagedWakeup _wakeup;
    private readonly List<ManagedWatcher> _watchers = new();
    private readonly object _parkGate = new();
    private ManagedSignalSocket? _recall;
    private int _activeWatchers;

    /// <summary>Creates an empty pool; watchers wake the loop through <paramref name="wakeup"/>.</summary>
    public ManagedWatcherPool(ManagedWakeup wakeup)
    {
        _wakeup = wakeup;
    }

    /// <summary>How many watcher threads exist.</summary>
    public int Count => _watchers.Count;

    /// <summary>The recall socket every watcher's read list starts with.</summary>
    public Socket RecallReceiver => _recall!.Receiver;

    /// <summary>The empty lists of watcher <paramref name="index"/> (created as needed), with the recall socket first in the read list.</summary>
    public ManagedSelectSet StartGroup(int index)
    {
        while (_watchers.Count <= index)
        {
            _recall ??= ManagedSignalSocket.Create();
            _watchers.Add(new ManagedWatcher(this, _watchers.Count + 1));
        }

        ManagedSelectSet lists = _watchers[index].Lists;
        lists.Clear();
        lists.Read.Add(_recall!.Receiver);
        return lists;
    }

    /// <summary>Lets the first <paramref name="groups"/> watchers select on their lists.</summary>
    public void Release(int groups)
    {
        Volatile.Write(ref _activeWatchers, groups);
        for (int g = 0; g < groups; g++)
        {
            _watchers[g].Go();
        }
    }

    /// <summary>Ends the round of the first <paramref name="groups"/> watchers: signals the recall socket, waits until all have parked, drains it, empties their lists.</summary>
    public void Recall(int groups)
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

    /// <summary>Called by a watcher when its round ends (just before it parks).</summary>
    /// <param name="wakeLoop">Whether something other than the recall socket was ready: the loop is to rescan.</param>
    public void WatcherDone(bool wakeLoop)
    {
        if (wakeLoop)
        {
            try
            {
                _wakeup.Signal();
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

    /// <summary>Ends every watcher thread (once it is parked) and closes the recall socket.</summary>
    public void Dispose()
    {
        foreach (ManagedWatcher watcher in _watchers)
        {
            watcher.Stop();
        }

        _recall?.Dispose();
    }
}
