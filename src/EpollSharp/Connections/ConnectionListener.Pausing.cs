using System;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

// Pausing and resuming accepting: the connection limit, running out of descriptors (the reserve descriptor, the retry timer).
public sealed partial class ConnectionListener
{
    /// <summary>The shared budget has room again (a connection closed somewhere): resume if paused at the limit.</summary>
    internal void SignalRoom()
    {
        if (Volatile.Read(ref _pauseKind) == PausedAtLimit)
        {
            PostResume();
        }
    }

    private void PostResume()
    {
        if (Interlocked.Exchange(ref _resumePosted, 1) == 0 && !Loop.TryPost(s_resume, this))
        {
            Volatile.Write(ref _resumePosted, 0);
        }
    }

    private void OnResumeSignal()
    {
        Volatile.Write(ref _resumePosted, 0);
        Resume();
    }

    /// <summary>Closes the reserve descriptor, accepts one pending connection with it and closes that; returns how many were shed.</summary>
    private int Shed()
    {
        if (_reserve is null)
        {
            return 0;
        }

        _reserve.Dispose();
        _reserve = null;
        int shed = 0;
        try
        {
            using Socket rejected = _socket.Accept();
            // An abortive close (a reset), whether or not the client sent something yet: a plain close of a socket with
            // nothing unread sends a FIN, which its client would take for a served and finished request. Close(0) sets
            // SO_LINGER to zero, which needs no descriptor.
            rejected.Close(0);
            shed = 1;
            Interlocked.Increment(ref _shed);
        }
        catch (SocketException)
        {
            // Someone else took the descriptor, or the client left.
        }

        TryOpenReserve();
        return shed;
    }

    private void TryOpenReserve()
    {
        try
        {
            _reserve = new Socket(_socket.AddressFamily, SocketType.Dgram, ProtocolType.Unspecified);
        }
        catch (SocketException)
        {
            _reserve = null;
        }
    }

    private void Pause(AcceptPauseReason reason, SocketError error, int shed)
    {
        bool first = _episode is null;
        if (first)
        {
            _episode = new AcceptPauseEpisode(reason, error);
            _retryDelay = _options.AcceptRetryDelay;
        }
        else
        {
            _episode!.Retries++;
            _retryDelay = TimeSpan.FromTicks(Math.Min(_retryDelay.Ticks * 2, _options.MaxAcceptRetryDelay.Ticks));
        }

        _episode.ShedConnections += shed;
        _registration?.ChangeInterest(Interest.None);
        PauseAcceptCompletions();
        if (reason == AcceptPauseReason.ConnectionLimit)
        {
            Volatile.Write(ref _pauseKind, PausedAtLimit);
            _budget.EnterWaiting();
            if (_budget.HasRoom)
            {
                // A connection closed between the failed acquire and the flag: do not wait for the next one.
                PostResume();
            }
        }
        else
        {
            Volatile.Write(ref _pauseKind, PausedForRetry);
            if (_retryTimer is null)
            {
                _retryTimer = Loop.Schedule(_retryDelay, s_onRetry, this);
            }
            else
            {
                _retryTimer.Change(_retryDelay);
            }
        }

        if (first)
        {
            LoopConnectionStats.For(Loop).OnAcceptPaused(_episode!.Reason);
            ConnectionLog.AcceptPaused(_log, LocalEndPoint, _episode!.Reason, _episode.SocketError, _episode.ShedConnections);
            _handler.OnAcceptPaused(this, _episode);
        }
    }

    /// <summary>Ends a pause (retry timer, a closed connection, room at the limit) and tries to accept at once.</summary>
    private void Resume()
    {
        int kind = Volatile.Read(ref _pauseKind);
        if (_stopped || kind == NotPaused)
        {
            return;
        }

        if (kind == PausedAtLimit)
        {
            _budget.LeaveWaiting();
        }

        _retryTimer?.Cancel();
        Volatile.Write(ref _pauseKind, NotPaused);
        if (_reserve is null && _options.KeepReserveDescriptor)
        {
            TryOpenReserve();
        }

        if (_registration is null)
        {
            ResumeAcceptCompletions();
            return;
        }

        _registration.ChangeInterest(Interest.Readable);
        OnAcceptReady();
    }

    private void EndEpisode()
    {
        AcceptPauseEpisode? episode = _episode;
        if (episode is null)
        {
            return;
        }

        _episode = null;
        _retryDelay = _options.AcceptRetryDelay;
        episode.End();
        ConnectionLog.AcceptResumed(_log, LocalEndPoint, (long)episode.Duration.TotalMilliseconds, episode.Reason, episode.ShedConnections);
        _handler.OnAcceptResumed(this, episode);
    }
}
