using System;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// The connection limit shared by one listener, or by all the listeners of a group on one endpoint. Counts live
/// connections plus accepts in progress; wakes the listeners that paused at the limit when a connection ends.
/// </summary>
internal sealed class ConnectionBudget
{
    private readonly object _lock = new();
    private ConnectionListener[] _listeners = Array.Empty<ConnectionListener>();
    private int _count;
    private int _waiting;

    public ConnectionBudget(int max) => Max = max;

    public int Max { get; }

    public int Count => Volatile.Read(ref _count);

    public bool HasRoom => Volatile.Read(ref _count) < Max;

    public void Add(ConnectionListener listener)
    {
        lock (_lock)
        {
            var listeners = new ConnectionListener[_listeners.Length + 1];
            _listeners.CopyTo(listeners, 0);
            listeners[_listeners.Length] = listener;
            Volatile.Write(ref _listeners, listeners);
        }
    }

    public bool TryAcquire()
    {
        while (true)
        {
            int count = Volatile.Read(ref _count);
            if (count >= Max)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _count, count + 1, count) == count)
            {
                return true;
            }
        }
    }

    public void Release()
    {
        Interlocked.Decrement(ref _count);
        if (Volatile.Read(ref _waiting) > 0)
        {
            foreach (ConnectionListener listener in Volatile.Read(ref _listeners))
            {
                listener.SignalRoom();
            }
        }
    }

    /// <summary>A listener pauses at the limit. It must check <see cref="HasRoom"/> afterwards, so a release in between is not missed.</summary>
    public void EnterWaiting() => Interlocked.Increment(ref _waiting);

    public void LeaveWaiting() => Interlocked.Decrement(ref _waiting);
}
