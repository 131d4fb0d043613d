using System;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    /// <summary>The connection's timer fired (<see cref="s_onTimer"/>): the idle timeout or the close deadline.</summary>
    private void OnTimer()
    {
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(static (c, _, _) => c.CheckDeadlines(), 0);
    }

    /// <summary>
    /// The time of a receive or send, for the idle timeout: the loop's <see cref="EventLoop.IterationTimestamp"/>, one clock
    /// read per iteration instead of two per echoed message (a profile of the echo on io_uring put 1.2 % of the server's
    /// samples in <c>clock_gettime</c> from here). It can be behind by what the iteration's callbacks took, so the idle
    /// timeout may end a connection that much early: microseconds, against timeouts of seconds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long ActivityTimestamp()
    {
        long t = Loop.IterationTimestamp;
        return t != 0 ? t : Stopwatch.GetTimestamp();
    }

    /// <summary>The body of <see cref="OnTimer"/>: ends the connection at a deadline that passed, else arms the timer for the next one.</summary>
    private bool CheckDeadlines()
    {
        long now = Stopwatch.GetTimestamp();
        _timerDue = 0;
        if (_closeDeadline != 0 && now >= _closeDeadline)
        {
            FinishClose(_closeDeadlineReason, SocketError.Success, abortive: true);
            return true;
        }

        long next = long.MaxValue;
        if (_settings.IdleTicks != 0)
        {
            long idleAt = Volatile.Read(ref _lastActivity) + _settings.IdleTicks;
            if (now >= idleAt)
            {
                // Reset only when output is stuck (the peer stopped reading); otherwise an orderly close.
                FinishClose(ConnectionCloseReason.IdleTimeout, SocketError.Success, abortive: _sendQueue is { IsEmpty: false });
                return true;
            }

            next = idleAt;
        }

        if (_closeDeadline != 0)
        {
            next = Math.Min(next, _closeDeadline);
        }

        if (next != long.MaxValue)
        {
            ArmTimer(next, now);
        }

        return true;
    }

    /// <summary>Sets (or brings forward) the graceful-close deadline and makes sure the timer fires by then.</summary>
    private void SetCloseDeadline(long deadline, ConnectionCloseReason reason)
    {
        if (deadline == 0 || (_closeDeadline != 0 && _closeDeadline <= deadline))
        {
            return;
        }

        _closeDeadline = deadline;
        _closeDeadlineReason = reason;
        if (_timerDue == 0 || deadline < _timerDue)
        {
            ArmTimer(deadline, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Arms (or moves) the connection's one timer for <paramref name="due"/>.</summary>
    private void ArmTimer(long due, long now)
    {
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        _timerDue = due;
        TimeSpan delay = ConnectionSettings.FromStopwatchTicks(Math.Max(0, due - now));
        if (_timer is null)
        {
            _timer = Loop.Schedule(delay, s_onTimer, this);
        }
        else
        {
            _timer.Change(delay);
        }
    }

    /// <summary>Moves a graceful close on as far as it can go now.</summary>
    private void ProceedClose()
    {
        if (Has(ConnectionFlags.Closed) || !Has(ConnectionFlags.CloseRequested))
        {
            return;
        }

        if (!Has(ConnectionFlags.InputEnded | ConnectionFlags.ReadClosed))
        {
            // Input that already arrived is still being delivered.
            return;
        }

        if (_pendingOffloads > 0)
        {
            // Their continuations may still write.
            return;
        }

        if (TryRequestOutputShutdown() && (_sendQueue is null || _sendQueue.IsEmpty))
        {
            ShutdownOutputNow();
        }

        MarkInterestDirty();
    }

    /// <summary>Shuts down the sending side now (FIN); the backlog is empty. A failure ends the connection with its error.</summary>
    private void ShutdownOutputNow()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException e)
        {
            CloseOnError(e.SocketErrorCode);
            return;
        }

        MarkOutputShut();
        CheckCompleted();
    }

    /// <summary>Ends the connection with <see cref="ConnectionCloseReason.Completed"/> once both sides are shut: the FIN went out and the peer's end of stream was read.</summary>
    private void CheckCompleted()
    {
        if (!Has(ConnectionFlags.Closed) && Has(ConnectionFlags.OutputShut) && Has(ConnectionFlags.ReadClosed))
        {
            FinishClose(ConnectionCloseReason.Completed, SocketError.Success, abortive: false);
        }
    }

    /// <summary>
    /// Ends the connection with <paramref name="error"/>, classified as Reset, BrokenPipe or SocketError. A send or
    /// receive that failed with EPIPE (<see cref="SocketError.Shutdown"/>) after the backend reported the connection's
    /// error with an event (<see cref="_reportedError"/>, a reset) ends with that error instead: on kqueue's kernels a
    /// send on a reset connection fails with EPIPE, because the socket can send no more, and only the event says why;
    /// over libkqueue the socket's error is moreover consumed by the event. On epoll the send itself fails with
    /// ECONNRESET, and no error is ever reported with an event, so nothing changes there.
    /// </summary>
    private void CloseOnError(SocketError error)
    {
        if (error == SocketError.Shutdown && _reportedError != SocketError.Success)
        {
            error = _reportedError;
        }

        ConnectionCloseReason reason = error switch
        {
            SocketError.ConnectionReset or SocketError.ConnectionAborted => ConnectionCloseReason.Reset,
            SocketError.Shutdown => ConnectionCloseReason.BrokenPipe,
            _ => ConnectionCloseReason.SocketError,
        };
        FinishClose(reason, error, abortive: false);
    }

    /// <summary>Ends the connection: releases the registration, timer, socket and buffers, untracks it, and schedules <see cref="ConnectionHandler.OnClosed"/>.</summary>
    private void FinishClose(ConnectionCloseReason reason, SocketError error, bool abortive, bool notify = true)
    {
        if (!TryMarkClosed())
        {
            return;
        }

        CloseReason = reason;
        SocketError = error;
        _registration?.Dispose();
        bool backlogFree = CloseCompletions();
        _timer?.Cancel();
        if (abortive)
        {
            try
            {
                _socket.LingerState = new LingerOption(true, 0);
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }

        _socket.Dispose();
        if (backlogFree)
        {
            _sendQueue?.Clear(_completionIo);
        }

        if (notify && Has(ConnectionFlags.Started))
        {
            // The listener hears of it after OnClosed, so that a drained ShutdownAsync means every OnClosed has run.
            NotifyClosed();
        }
        else
        {
            Listener?.OnConnectionClosed(this);
        }
    }
}
