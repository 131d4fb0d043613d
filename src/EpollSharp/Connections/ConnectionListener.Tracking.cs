using System;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

// The listener's list of live connections: tracking, the closed notification, aborting, and the loops' release.
public sealed partial class ConnectionListener
{
    /// <summary>Called by a connection (on its loop thread) when it has closed.</summary>
    internal void OnConnectionClosed(Connection connection)
    {
        TaskCompletionSource<bool>? drained = null;
        LoopTimer? drainTimer = null;
        bool removeHooks;
        lock (_trackLock)
        {
            Connection? previous = connection.ListPrevious;
            Connection? next = connection.ListNext;
            if (previous is not null)
            {
                previous.ListNext = next;
            }
            else if (_head == connection)
            {
                _head = next;
            }

            if (next is not null)
            {
                next.ListPrevious = previous;
            }

            connection.ListPrevious = null;
            connection.ListNext = null;
            _count--;
            if (connection.CloseReason == ConnectionCloseReason.ShutdownTimeout)
            {
                _resetAtDrainDeadline++;
            }

            if (_count == 0 && _drained is not null)
            {
                drained = _drained;
                drainTimer = _drainTimer;
            }

            removeHooks = _count == 0 && _acceptingEnded;
        }

        if (removeHooks)
        {
            RemoveReleaseHooks();
        }

        _budget.Release();
        if (Volatile.Read(ref _pauseKind) == PausedForRetry)
        {
            // Descriptors were short and one just came free: try again now rather than at the next retry.
            PostResume();
        }

        if (drained is not null)
        {
            drainTimer?.Cancel();
            int reset = Volatile.Read(ref _resetAtDrainDeadline);
            if (reset > 0)
            {
                ConnectionLog.DrainTimedOut(_log, LocalEndPoint, reset);
            }

            drained.TrySetResult(true);
        }
    }

    private bool Track(Connection connection)
    {
        lock (_trackLock)
        {
            if (_closedToNewConnections)
            {
                return false;
            }

            connection.ListNext = _head;
            if (_head is not null)
            {
                _head.ListPrevious = connection;
            }

            _head = connection;
            _count++;
            return true;
        }
    }

    private Connection[] SnapshotLocked()
    {
        var connections = new Connection[_count];
        int i = 0;
        for (Connection? c = _head; c is not null && i < connections.Length; c = c.ListNext)
        {
            connections[i++] = c;
        }

        return connections;
    }

    /// <summary>The drain deadline of a graceful shutdown passed: reset what is still open (logged when the last one has closed).</summary>
    private void OnDrainExpired() => AbortAll(ConnectionCloseReason.ShutdownTimeout);

    private void AbortAll(ConnectionCloseReason reason)
    {
        Connection[] connections;
        lock (_trackLock)
        {
            connections = SnapshotLocked();
        }

        Action<object?> abort = reason == ConnectionCloseReason.ShutdownTimeout ? s_abortForShutdown : s_abortForDispose;
        foreach (Connection connection in connections)
        {
            if (connection.Loop.IsOnLoopThread)
            {
                connection.AbortFor(reason);
            }
            else if (!connection.Loop.TryPost(abort, connection))
            {
                connection.CloseOnDeadLoop();
            }
        }
    }

    /// <summary>
    /// <paramref name="loop"/> is being released (disposed, whatever state it was in), on its thread: stop accepting if it is
    /// the accepting loop, and reset this listener's connections that live on it (<see cref="ConnectionCloseReason.LoopDisposed"/>).
    /// </summary>
    private void OnLoopReleased(EventLoop loop)
    {
        if (loop == Loop)
        {
            StopAcceptingOnLoop();
        }

        Connection[] connections;
        lock (_trackLock)
        {
            connections = SnapshotLocked();
        }

        foreach (Connection connection in connections)
        {
            if (connection.Loop == loop)
            {
                connection.AbortFor(ConnectionCloseReason.LoopDisposed);
            }
        }
    }

    /// <summary>The listener accepts no more and has no connection left: nothing of it remains for a loop's release to close.</summary>
    private void RemoveReleaseHooks()
    {
        for (int i = 0; i < _releaseHooks.Length; i++)
        {
            EventLoop.ReleaseHook? hook = _releaseHooks[i];
            if (hook is not null)
            {
                _targets[i].RemoveReleaseHook(hook);
            }
        }
    }
}
