using System;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// One accepted TCP connection on an <see cref="EventLoop"/>: received data is handed to a <see cref="ConnectionHandler"/>
/// as spans over pooled buffers; writes go straight to the kernel and only what it does not take is buffered.
/// </summary>
/// <remarks>
/// <para><b>Threads.</b> A connection lives on one loop (<see cref="Loop"/>). Its handler is called there, and its methods
/// (<see cref="Write(ReadOnlySpan{byte})"/>, <see cref="Close()"/>, ...) must be called there too: from a handler callback, from an
/// offload continuation, or from work you post with <c>connection.Loop.Post</c>. Elsewhere they throw
/// <see cref="InvalidOperationException"/>. Properties may be read from any thread (values may be stale).</para>
/// <para><b>Receiving.</b> When the socket is readable the connection rents a buffer of <see cref="ConnectionOptions.ReceiveBufferSize"/>
/// from <see cref="System.Buffers.ArrayPool{T}.Shared"/>, reads until the kernel has nothing more (or
/// <see cref="ConnectionOptions.MaxReadsPerEvent"/> reads), calls <see cref="ConnectionHandler.OnReceived"/> for each read, and
/// returns the buffer: an idle connection holds no receive buffer, and a read allocates nothing.</para>
/// <para><b>Sending.</b> <see cref="Write(ReadOnlySpan{byte})"/> sends at once; what the kernel does not take is copied into pooled
/// chunks and sent when the socket becomes writable. Writable interest is registered only while such a backlog exists.
/// Backpressure: at <see cref="ConnectionOptions.HighWatermark"/> buffered bytes <see cref="ConnectionHandler.OnWritePaused"/> is called,
/// at <see cref="ConnectionOptions.LowWatermark"/> <see cref="ConnectionHandler.OnWriteResumed"/>; past
/// <see cref="ConnectionOptions.MaxBufferedBytes"/> the write is refused and the connection reset.</para>
/// <para><b>Ending.</b> <see cref="Shutdown"/> half-closes (FIN after the backlog is flushed); <see cref="Close()"/> closes gracefully
/// within a deadline; <see cref="Abort"/> resets. Errors from the peer (reset, broken pipe) end the connection with a
/// <see cref="CloseReason"/>, never with an exception or a signal.</para>
/// </remarks>
public sealed partial class Connection
{
    private static readonly ReadinessCallback s_onReady = static (registration, readiness) => ((Connection)registration.State!).OnReady(readiness, registration.ReportedSocketError);
    private static readonly Action<LoopTimer> s_onTimer = static timer => ((Connection)timer.State!).OnTimer();
    private static long s_lastId;

    private readonly Socket _socket;

    /// <summary>The receives and sends on <see cref="_socket"/> (one file per target framework).</summary>
    private readonly SocketTransfer _transfer;
    private readonly ConnectionHandler _handler;
    private readonly ConnectionSettings _settings;
    private Registration? _registration;
    private LoopTimer? _timer;
    private SendQueue? _sendQueue;
    private Interest _interest;
    private long _lastActivity;
    private long _timerDue;
    private long _closeDeadline;
    private ConnectionCloseReason _closeDeadlineReason;
    private long _bytesReceived;
    private long _bytesSent;
    private int _depth;
    private int _pendingOffloads;
    private bool _started;
    private bool _closed;
    private bool _receivingPaused;
    private bool _inputClosed;
    private bool _inputEnded;
    private bool _outputShutdownRequested;
    private bool _outputShut;
    private bool _closeRequested;
    private bool _writePaused;
    private bool _inReceivePass;
    private bool _continuationPosted;
    private bool _interestDirty;
    private bool _notifyClosedPending;
    private bool _shutdownRequestPending;

    /// <summary>The backend reported the peer's half-close or a hang-up: read on to the end of stream in every pass from now on.</summary>
    private bool _hangupSeen;

    /// <summary>The backend reported an error: an end of stream read from now on is a reset whose error code was consumed.</summary>
    private bool _errorSeen;

    /// <summary>
    /// The socket error the backend reported with a readiness event (kqueue hands it over in the event), the first one;
    /// <see cref="SocketError.Success"/> while none was (always so on epoll and the managed backend). See <see cref="CloseOnError"/>.
    /// </summary>
    private SocketError _reportedError;

    internal Connection(ConnectionListener? listener, EventLoop loop, Socket socket, ConnectionHandler handler, ConnectionSettings settings)
    {
        Listener = listener;
        Loop = loop;
        _socket = socket;
        _transfer = new SocketTransfer(socket);
        _handler = handler;
        _settings = settings;
        Id = Interlocked.Increment(ref s_lastId);
        try
        {
            RemoteEndPoint = socket.RemoteEndPoint;
        }
        catch (SocketException)
        {
            // The peer may already be gone; the endpoint is informational.
        }
    }

    /// <summary>A number unique to this connection within the process.</summary>
    public long Id { get; }

    /// <summary>The loop the connection lives on; its callbacks run on this loop's thread.</summary>
    public EventLoop Loop { get; }

    /// <summary>The listener that accepted the connection.</summary>
    public ConnectionListener? Listener { get; }

    /// <summary>The peer's address, or <see langword="null"/> if it could not be read at accept time.</summary>
    public EndPoint? RemoteEndPoint { get; }

    /// <summary>Your per-connection object. The connection never touches it.</summary>
    public object? UserState { get; set; }

    /// <summary>Bytes received so far.</summary>
    public long BytesReceived => Volatile.Read(ref _bytesReceived);

    /// <summary>Bytes handed to the kernel so far.</summary>
    public long BytesSent => Volatile.Read(ref _bytesSent);

    /// <summary>Bytes written but not yet taken by the kernel.</summary>
    public long BufferedBytes => _sendQueue?.Length ?? 0;

    /// <summary>Whether backpressure is on: the backlog reached <see cref="ConnectionOptions.HighWatermark"/> and has not yet drained to <see cref="ConnectionOptions.LowWatermark"/>.</summary>
    public bool IsWritePaused => _writePaused;

    /// <summary>Whether <see cref="PauseReceiving"/> is in effect.</summary>
    public bool IsReceivingPaused => _receivingPaused;

    /// <summary>Whether the peer shut down its sending side (end of stream was read): no more data will arrive.</summary>
    public bool IsReadClosed => _inputClosed;

    /// <summary>Whether this side's output is shut down or will be once the backlog is flushed (<see cref="Shutdown"/> or <see cref="Close()"/>); writes are refused.</summary>
    public bool IsWriteClosed => _outputShutdownRequested;

    /// <summary>Whether a graceful <see cref="Close()"/> is in progress.</summary>
    public bool IsClosing => _closeRequested && !_closed;

    /// <summary>Whether the connection has ended; its socket is closed.</summary>
    public bool IsClosed => Volatile.Read(ref _closed);

    /// <summary>Why the connection ended; <see cref="ConnectionCloseReason.None"/> while it is open.</summary>
    public ConnectionCloseReason CloseReason { get; private set; }

    /// <summary>The socket error that ended the connection, if one did; otherwise <see cref="System.Net.Sockets.SocketError.Success"/>.</summary>
    public SocketError SocketError { get; private set; }

    /// <summary>How many <see cref="Offload{TResult}(Func{TResult}, Action{Connection, TResult})"/> calls have not yet completed.</summary>
    public int PendingOffloads => Volatile.Read(ref _pendingOffloads);

    /// <summary>Intrusive links for the listener's list of live connections (guarded by the listener's lock).</summary>
    internal Connection? ListPrevious { get; set; }

    internal Connection? ListNext { get; set; }

    /// <summary>
    /// Stops reading from the socket (its readable interest is removed) until <see cref="ResumeReceiving"/>. Data keeps
    /// arriving into the kernel's buffer until it is full, then TCP flow control slows the peer. Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void PauseReceiving()
    {
        ThrowIfNotOnLoop();
        if (_receivingPaused || _closed)
        {
            return;
        }

        _receivingPaused = true;
        Enter();
        _interestDirty = true;
        Exit();
    }

    /// <summary>Reads from the socket again after <see cref="PauseReceiving"/>. Idempotent.</summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void ResumeReceiving()
    {
        ThrowIfNotOnLoop();
        if (!_receivingPaused || _closed)
        {
            return;
        }

        _receivingPaused = false;
        Enter();
        _interestDirty = true;
        if (_settings.TriggerMode == TriggerMode.Edge)
        {
            // Edge-triggered, data that was left in the socket while paused raises no new edge: read it.
            PostReceiveContinuation();
        }

        Exit();
    }

    /// <summary>
    /// Half-closes: once every buffered byte is sent, shuts down the sending side (the peer reads end of stream).
    /// Receiving goes on; the connection closes when the peer's end of stream has been read as well
    /// (<see cref="ConnectionCloseReason.Completed"/>). Later writes are refused. Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Shutdown()
    {
        ThrowIfNotOnLoop();
        if (_closed || _outputShutdownRequested)
        {
            return;
        }

        Enter();
        try
        {
            _outputShutdownRequested = true;
            if (_sendQueue is null || _sendQueue.IsEmpty)
            {
                ShutdownOutputNow();
            }
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Closes gracefully within <see cref="ConnectionOptions.CloseTimeout"/>. See <see cref="Close(TimeSpan)"/>.</summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Close() => Close(_settings.CloseTimeout);

    /// <summary>
    /// Closes gracefully: input that has already arrived is still delivered (reading goes on until the socket has nothing
    /// more; while receiving is paused, that waits for <see cref="ResumeReceiving"/>, which the default handler calls when the
    /// backlog drains), pending offloads complete, buffered output is flushed, the sending side is shut down (FIN), and input
    /// that arrives afterwards is read and discarded until the peer closes its side, so the peer gets every byte and no reset.
    /// If that does not finish within <paramref name="timeout"/>, the connection is reset (<see cref="ConnectionCloseReason.CloseTimeout"/>);
    /// use <see cref="Abort"/> to end it at once. Calling it again can only shorten the deadline.
    /// </summary>
    /// <param name="timeout">The deadline; <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is not infinite, and negative or above 3,650 days.</exception>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Close(TimeSpan timeout)
    {
        if (!ConnectionSettings.IsValidTimeout(timeout, allowZero: true))
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "The timeout must be zero or more and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
        }

        ThrowIfNotOnLoop();
        if (_closed)
        {
            return;
        }

        Enter();
        try
        {
            long deadline = timeout == Timeout.InfiniteTimeSpan ? 0 : Stopwatch.GetTimestamp() + ConnectionSettings.ToStopwatchTicks(timeout);
            SetCloseDeadline(deadline, ConnectionCloseReason.CloseTimeout);
            if (_closeRequested)
            {
                return;
            }

            _closeRequested = true;
            _interestDirty = true;
            if (_inputClosed)
            {
                ProceedClose();
            }
            else if (!_receivingPaused && !_inReceivePass)
            {
                // Deliver what has arrived; the pass ends the input when the socket has nothing more.
                ReceivePass();
            }

            // Otherwise the pass running now, or the first one after ResumeReceiving, ends the input.
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// Resets the connection now: buffered output is dropped, the socket is closed with linger 0, so the peer sees a reset
    /// (RST) rather than an orderly end. <see cref="ConnectionHandler.OnClosed"/> follows with <see cref="ConnectionCloseReason.Aborted"/>. Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Abort()
    {
        ThrowIfNotOnLoop();
        if (_closed)
        {
            return;
        }

        Enter();
        try
        {
            FinishClose(ConnectionCloseReason.Aborted, SocketError.Success, abortive: true);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Starts the connection on its loop thread: registers it and calls <see cref="ConnectionHandler.OnConnected"/>.</summary>
    internal void Start()
    {
        _depth++;
        try
        {
            if (_closed)
            {
                return;
            }

            _lastActivity = Stopwatch.GetTimestamp();
            SocketError optionError = ApplySocketOptions(out string? failedOption);
            try
            {
                _registration = Loop.Register(_socket, Interest.Readable, s_onReady, this, _settings.TriggerMode);
            }
            catch (ObjectDisposedException)
            {
                // The loop is being released (or the socket is gone).
                FinishClose(ConnectionCloseReason.LoopDisposed, SocketError.OperationAborted, abortive: true);
                return;
            }
            catch
            {
                FinishClose(ConnectionCloseReason.SocketError, SocketError.SocketError, abortive: true);
                throw;
            }

            _interest = Interest.Readable;
            if (_settings.IdleTicks != 0)
            {
                _timerDue = _lastActivity + _settings.IdleTicks;
                _timer = Loop.Schedule(_settings.IdleTimeout, s_onTimer, this);
            }

            _started = true;
            _handler.OnConnected(this);
            if (failedOption is not null && !_closed)
            {
                _handler.OnSocketOptionFailed(this, failedOption, optionError);
            }

            if (_shutdownRequestPending && !_closed)
            {
                _shutdownRequestPending = false;
                _handler.OnShutdownRequested(this);
            }
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// Makes the socket non-blocking and applies the options of <see cref="ConnectionOptions"/> that fit its kind: options
    /// that only TCP has go only to TCP sockets. A failure does not end the connection: it is returned, to be reported
    /// through <see cref="ConnectionHandler.OnSocketOptionFailed"/>.
    /// </summary>
    /// <returns>The error of the first option that failed, with its name in <paramref name="failedOption"/>; otherwise success and null.</returns>
    private SocketError ApplySocketOptions(out string? failedOption)
    {
        failedOption = null;
        try
        {
            _socket.Blocking = false;
        }
        catch (SocketException e)
        {
            failedOption = "O_NONBLOCK";
            return e.SocketErrorCode;
        }

        if (_settings.NoDelay && SocketSetup.IsTcp(_socket))
        {
            try
            {
                _socket.NoDelay = true;
            }
            catch (SocketException e)
            {
                failedOption = "TCP_NODELAY";
                return e.SocketErrorCode;
            }
        }

        return SocketError.Success;
    }

    /// <summary>The listener's graceful shutdown reached this connection (on its loop thread).</summary>
    internal void RequestShutdown(long drainDeadline)
    {
        if (_closed)
        {
            return;
        }

        _depth++;
        try
        {
            if (drainDeadline != 0)
            {
                SetCloseDeadline(drainDeadline, ConnectionCloseReason.ShutdownTimeout);
            }

            if (!_started)
            {
                _shutdownRequestPending = true;
                return;
            }

            if (!_closeRequested)
            {
                _handler.OnShutdownRequested(this);
            }
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Resets the connection for the listener (shutdown deadline, dispose), on its loop thread.</summary>
    internal void AbortFor(ConnectionCloseReason reason)
    {
        if (_closed)
        {
            return;
        }

        _depth++;
        try
        {
            FinishClose(reason, SocketError.Success, abortive: true);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// Closes a connection whose loop can no longer run anything (disposed): no callback is made. Called on another
    /// thread, which is safe only because the loop no longer touches the connection.
    /// </summary>
    internal void CloseOnDeadLoop()
    {
        FinishClose(ConnectionCloseReason.ListenerDisposed, SocketError.OperationAborted, abortive: true, notify: false);
    }

    private void ThrowIfNotOnLoop()
    {
        if (!Loop.IsOnLoopThread)
        {
            throw new InvalidOperationException("A connection may only be used on its loop thread: call it from a handler callback or an offload continuation, or post the call with connection.Loop.Post.");
        }
    }

    /// <summary>Enters a callback or a public call: interest changes and the closed notification wait until the outermost one exits.</summary>
    private void Enter() => _depth++;

    private void Exit()
    {
        if (--_depth != 0)
        {
            return;
        }

        if (_interestDirty)
        {
            _interestDirty = false;
            ApplyInterest();
        }

        if (_notifyClosedPending)
        {
            _notifyClosedPending = false;
            _handler.OnClosed(this);
        }
    }

    /// <summary>A callback threw: reset the connection; the caller rethrows to the loop.</summary>
    private void Fault()
    {
        if (!_closed)
        {
            FinishClose(ConnectionCloseReason.HandlerFault, SocketError.Success, abortive: true);
        }
    }

    private void OnReady(Readiness readiness, SocketError reportedError)
    {
        _depth++;
        try
        {
            if (reportedError != SocketError.Success && _reportedError == SocketError.Success)
            {
                _reportedError = reportedError;
            }

            HandleReadiness(readiness);
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    private void HandleReadiness(Readiness readiness)
    {
        const Readiness Trouble = Readiness.Closed | Readiness.Error;
        if (_closed)
        {
            return;
        }

        if ((readiness & (Readiness.Writable | Trouble)) != 0 && _sendQueue is { IsEmpty: false })
        {
            Flush();
            if (_closed)
            {
                return;
            }
        }

        // Remembered, not just passed to this pass: a pass cut short (MaxReadsPerEvent, a pause) and the ones after it
        // must still read to the end of stream, and edge-triggered no new event will come for it.
        _hangupSeen |= (readiness & (Readiness.ReadClosed | Trouble)) != 0;
        _errorSeen |= (readiness & Readiness.Error) != 0;
        if ((readiness & (Readiness.Readable | Readiness.ReadClosed | Trouble)) != 0 && WantsToRead)
        {
            ReceivePass();
        }
        else if ((readiness & Readiness.Error) != 0)
        {
            SocketError error = PendingError();
            if (error != SocketError.Success)
            {
                CloseOnError(error);
            }
        }
    }

    private bool WantsToRead => !_inputClosed && (_inputEnded || !_receivingPaused);

    /// <summary>
    /// The socket's error: the one the backend reported with an event when it did (over libkqueue the socket no longer
    /// has it), else the pending error read from the socket (which clears it).
    /// </summary>
    private SocketError PendingError()
    {
        if (_reportedError != SocketError.Success)
        {
            return _reportedError;
        }

        try
        {
            object? value = _socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error);
            return value is int code ? (SocketError)code : SocketError.Success;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode;
        }
        catch (ObjectDisposedException)
        {
            return SocketError.OperationAborted;
        }
    }

    private void OnTimer()
    {
        if (_closed)
        {
            return;
        }

        _depth++;
        try
        {
            long now = Stopwatch.GetTimestamp();
            _timerDue = 0;
            if (_closeDeadline != 0 && now >= _closeDeadline)
            {
                FinishClose(_closeDeadlineReason, SocketError.Success, abortive: true);
                return;
            }

            long next = long.MaxValue;
            if (_settings.IdleTicks != 0)
            {
                long idleAt = Volatile.Read(ref _lastActivity) + _settings.IdleTicks;
                if (now >= idleAt)
                {
                    // Reset only when output is stuck (the peer stopped reading); otherwise an orderly close.
                    FinishClose(ConnectionCloseReason.IdleTimeout, SocketError.Success, abortive: _sendQueue is { IsEmpty: false });
                    return;
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
        }
        finally
        {
            Exit();
        }
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

    private void ArmTimer(long due, long now)
    {
        if (_closed)
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
        if (_closed || !_closeRequested)
        {
            return;
        }

        if (!_inputEnded && !_inputClosed)
        {
            // Input that already arrived is still being delivered.
            return;
        }

        if (_pendingOffloads > 0)
        {
            // Their continuations may still write.
            return;
        }

        if (!_outputShutdownRequested)
        {
            _outputShutdownRequested = true;
            if (_sendQueue is null || _sendQueue.IsEmpty)
            {
                ShutdownOutputNow();
            }
        }

        _interestDirty = true;
    }

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

        _outputShut = true;
        CheckCompleted();
    }

    private void CheckCompleted()
    {
        if (!_closed && _outputShut && _inputClosed)
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
        if (_closed)
        {
            return;
        }

        Volatile.Write(ref _closed, true);
        CloseReason = reason;
        SocketError = error;
        _registration?.Dispose();
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
        _sendQueue?.Clear();
        Listener?.OnConnectionClosed(this);
        if (notify && _started)
        {
            if (_depth > 0)
            {
                _notifyClosedPending = true;
            }
            else
            {
                _handler.OnClosed(this);
            }
        }
    }

    private void ApplyInterest()
    {
        if (_closed || _registration is null)
        {
            return;
        }

        Interest want = Interest.None;
        if (WantsToRead)
        {
            want |= Interest.Readable;
        }

        if (_sendQueue is { IsEmpty: false })
        {
            want |= Interest.Writable;
        }

        if (want != _interest)
        {
            _registration.ChangeInterest(want);
            _interest = want;
        }
    }
}
