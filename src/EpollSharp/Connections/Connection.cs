using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// One TCP or Unix socket connection on an <see cref="EventLoop"/>, accepted by a <see cref="ConnectionListener"/> or dialed with
/// <see cref="Connect"/> / <see cref="ConnectAsync"/>: received data is handed to a <see cref="ConnectionHandler"/>
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

    /// <summary>The counts of this connection's loop for the metrics.</summary>
    private readonly LoopConnectionStats _stats;
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
    private int _pendingOffloads;

    /// <summary>
    /// The socket error the backend reported with a readiness event (kqueue hands it over in the event), the first one;
    /// <see cref="SocketError.Success"/> while none was (always so on epoll and the managed backend). See <see cref="CloseOnError"/>.
    /// </summary>
    private SocketError _reportedError;

    internal Connection(ConnectionListener? listener, EventLoop loop, Socket socket, ConnectionHandler handler, ConnectionSettings settings)
        : this(listener, loop, socket, handler, settings, localEndPoint: null, nonBlocking: false)
    {
    }

    /// <summary>
    /// A connection on <paramref name="socket"/>. <paramref name="localEndPoint"/>, when given, is this side's address
    /// (an accepted socket's is the listener's when the listener is bound to one address), so that it is not read and
    /// allocated again; <paramref name="nonBlocking"/> says the descriptor is non-blocking already (the backend accepted
    /// it so), and <see cref="Start"/> leaves it as it is: setting <see cref="Socket.Blocking"/> would give the socket a
    /// runtime context of its own (about 200 bytes held for the connection's life) for nothing.
    /// </summary>
    internal Connection(ConnectionListener? listener, EventLoop loop, Socket socket, ConnectionHandler handler, ConnectionSettings settings, EndPoint? localEndPoint, bool nonBlocking)
    {
        Listener = listener;
        Loop = loop;
        _socket = socket;
        _transfer = new SocketTransfer(socket);
        _completionIo = loop.CompletionIo;
        _handler = handler;
        _settings = settings;
        _stats = LoopConnectionStats.For(loop);
        Id = Interlocked.Increment(ref s_lastId);
        try
        {
            RemoteEndPoint = socket.RemoteEndPoint;
        }
        catch (SocketException)
        {
            // The peer may already be gone; the endpoint is informational.
        }

        if (nonBlocking)
        {
            _flags = (int)ConnectionFlags.NonBlockingAlready;
        }

        try
        {
            LocalEndPoint = localEndPoint ?? socket.LocalEndPoint;
        }
        catch (SocketException)
        {
            // Informational, as the remote one.
        }
    }

    /// <summary>A number unique to this connection within the process.</summary>
    public long Id { get; }

    /// <summary>The loop the connection lives on; its callbacks run on this loop's thread.</summary>
    public EventLoop Loop { get; }

    /// <summary>The listener that accepted the connection; <see langword="null"/> for a connection made with <see cref="Connect"/> or <see cref="ConnectAsync"/>.</summary>
    public ConnectionListener? Listener { get; }

    /// <summary>The peer's address, or <see langword="null"/> if it could not be read when the connection was made.</summary>
    public EndPoint? RemoteEndPoint { get; }

    /// <summary>This side's address (for an accepted connection, the address the client reached, which a wildcard listener does not know), or <see langword="null"/> if it could not be read when the connection was made.</summary>
    public EndPoint? LocalEndPoint { get; }

    /// <summary>
    /// Names the connection for logs and reports (such as <see cref="EventLoop.SlowCallback"/>'s, which uses it for the
    /// connection's registration): its id, the peer's address, whether it was accepted or dialed, and the handler's type.
    /// Safe from any thread.
    /// </summary>
    /// <returns>For example <c>connection 42 from 127.0.0.1:51234 (accepted), handler EchoHandler</c>.</returns>
    public override string ToString() =>
        "connection " + Id.ToString(System.Globalization.CultureInfo.InvariantCulture) +
        (Listener is null ? " to " : " from ") + (RemoteEndPoint?.ToString() ?? "an unknown address") +
        (Listener is null ? " (dialed)" : " (accepted)") + ", handler " + _handler.GetType().Name;

    /// <summary>Counts the connection opened in the metrics, once its listener or dial has taken it on (from then on it ends in <see cref="CallOnClosed"/>, which counts it closed).</summary>
    internal void CountOpened() => _stats.OnOpened();

    /// <summary>Your per-connection object. The connection never touches it.</summary>
    public object? UserState { get; set; }

    /// <summary>Bytes received so far.</summary>
    public long BytesReceived => Volatile.Read(ref _bytesReceived);

    /// <summary>Bytes handed to the kernel so far.</summary>
    public long BytesSent => Volatile.Read(ref _bytesSent);

    /// <summary>Bytes written but not yet taken by the kernel.</summary>
    public long BufferedBytes => _sendQueue?.Length ?? 0;

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
        if (Has(ConnectionFlags.ReceivingPaused | ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(static (c, _, _) => c.ChangeReceiving(paused: true), 0);
    }

    /// <summary>Reads from the socket again after <see cref="PauseReceiving"/>. Idempotent.</summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void ResumeReceiving()
    {
        ThrowIfNotOnLoop();
        if (!Has(ConnectionFlags.ReceivingPaused) || Has(ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(static (c, _, _) => c.ChangeReceiving(paused: false), 0);
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
        if (Has(ConnectionFlags.Closed | ConnectionFlags.OutputShutdownRequested))
        {
            return;
        }

        Guarded(static (c, _, _) => c.ShutdownOutput(), 0);
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
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(static (c, t, _) => c.BeginClose(t), timeout);
    }

    /// <summary>
    /// Resets the connection now: buffered output is dropped, the socket is closed with linger 0, so the peer sees a reset
    /// (RST) rather than an orderly end. <see cref="ConnectionHandler.OnClosed"/> follows with <see cref="ConnectionCloseReason.Aborted"/>. Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Abort()
    {
        ThrowIfNotOnLoop();
        AbortFor(ConnectionCloseReason.Aborted);
    }

    /// <summary>Starts the connection on its loop thread: registers it and calls <see cref="ConnectionHandler.OnConnected"/>.</summary>
    internal void Start() => Guarded(static (c, _, _) => c.StartCore(), 0);

    /// <summary>The listener's graceful shutdown reached this connection (on its loop thread).</summary>
    internal void RequestShutdown(long drainDeadline)
    {
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(static (c, d, _) => c.RequestShutdownCore(d), drainDeadline);
    }

    /// <summary>Resets the connection for the listener (shutdown deadline, dispose), or for <see cref="Abort"/>, on its loop thread.</summary>
    internal void AbortFor(ConnectionCloseReason reason)
    {
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        Guarded(
            static (c, r, _) =>
            {
                c.FinishClose(r, SocketError.Success, abortive: true);
                return true;
            },
            reason);
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

    /// <summary>The body of <see cref="PauseReceiving"/> and <see cref="ResumeReceiving"/>.</summary>
    private bool ChangeReceiving(bool paused)
    {
        SetReceivingPaused(paused);
        if (!paused && _completionIo is not null)
        {
            // Held bytes go first, from a continuation (the outermost Exit posts it); the receive is armed after them.
            MarkInterestDirty();
        }
        else if (!paused && _settings.TriggerMode == TriggerMode.Edge)
        {
            // Edge-triggered, data that was left in the socket while paused raises no new edge: read it.
            PostReceiveContinuation();
        }

        return true;
    }

    /// <summary>The body of <see cref="Shutdown"/>.</summary>
    private bool ShutdownOutput()
    {
        TryRequestOutputShutdown();
        if (_sendQueue is null || _sendQueue.IsEmpty)
        {
            ShutdownOutputNow();
        }

        return true;
    }

    /// <summary>The body of <see cref="Close(TimeSpan)"/>.</summary>
    private bool BeginClose(TimeSpan timeout)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? 0 : Stopwatch.GetTimestamp() + ConnectionSettings.ToStopwatchTicks(timeout);
        SetCloseDeadline(deadline, ConnectionCloseReason.CloseTimeout);
        if (!TryRequestClose())
        {
            return true;
        }

        if (Has(ConnectionFlags.ReadClosed))
        {
            ProceedClose();
        }
        else if (_completionIo is not null)
        {
            // What arrived is delivered before the input ends. With every receive completion of the connection handed
            // over, the rest is in the socket: read it to its end now (DrainForClose), as the readiness pass does (the
            // multishot receive then reads on, and discards). Otherwise the receive is cancelled (the outermost Exit asks
            // for it), and the socket is read to its end once its completions are all delivered.
            if (!Has(ConnectionFlags.ReceivingPaused | ConnectionFlags.InReceivePass) && !HasHeld && (_channel is null || !_completionIo.ReceivePending(_channel)))
            {
                DrainForClose();
            }
        }
        else if (!Has(ConnectionFlags.ReceivingPaused | ConnectionFlags.InReceivePass))
        {
            // Deliver what has arrived; the pass ends the input when the socket has nothing more.
            ReceivePass();
        }

        // Otherwise the pass running now, or the first one after ResumeReceiving, ends the input.
        return true;
    }

    /// <summary>The body of <see cref="Start"/>.</summary>
    private bool StartCore()
    {
        if (Has(ConnectionFlags.Closed))
        {
            return true;
        }

        _lastActivity = Stopwatch.GetTimestamp();
        List<KeyValuePair<string, SocketError>>? optionFailures = ApplySocketOptions();
        try
        {
            if (_completionIo is not null)
            {
                _channel = _completionIo.Open(SocketHandles.TryGetSafeHandle(_socket) ?? throw new ObjectDisposedException("socket"), this);
                MarkInterestDirty();
            }
            else
            {
                _registration = Loop.Register(_socket, Interest.Readable, s_onReady, this, _settings.TriggerMode);
            }
        }
        catch (ObjectDisposedException)
        {
            // The loop is being released (or the socket is gone).
            FinishClose(ConnectionCloseReason.LoopDisposed, SocketError.OperationAborted, abortive: true);
            return true;
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

        MarkStarted();
        _handler.OnConnected(this);
        if (optionFailures is not null)
        {
            foreach (KeyValuePair<string, SocketError> failure in optionFailures)
            {
                if (Has(ConnectionFlags.Closed))
                {
                    break;
                }

                ConnectionLog.SocketOptionFailed(_settings.Logger, Id, RemoteEndPoint, failure.Key, failure.Value);
                _handler.OnSocketOptionFailed(this, failure.Key, failure.Value);
            }
        }

        if (!Has(ConnectionFlags.Closed) && Take(ConnectionFlags.ShutdownRequestPending))
        {
            _handler.OnShutdownRequested(this);
        }

        return true;
    }

    /// <summary>The body of <see cref="RequestShutdown"/>.</summary>
    private bool RequestShutdownCore(long drainDeadline)
    {
        if (drainDeadline != 0)
        {
            SetCloseDeadline(drainDeadline, ConnectionCloseReason.ShutdownTimeout);
        }

        if (!Has(ConnectionFlags.Started))
        {
            DeferShutdownRequest();
            return true;
        }

        if (!Has(ConnectionFlags.CloseRequested))
        {
            _handler.OnShutdownRequested(this);
        }

        return true;
    }

    /// <summary>
    /// Makes the socket non-blocking and applies the options of <see cref="ConnectionOptions"/> that fit its kind: options
    /// that only TCP has (<c>TCP_NODELAY</c>, the keep-alive timings) go only to TCP sockets; <c>SO_KEEPALIVE</c>, the
    /// buffer sizes and linger go to every stream socket. The one place for accepted and dialed connections. A failure
    /// does not end the connection, nor stop the other options: each is returned, to be reported through
    /// <see cref="ConnectionHandler.OnSocketOptionFailed"/>.
    /// </summary>
    /// <returns>The C name and error of each option that failed, in the order they were set; null when none did (no allocation then).</returns>
    private List<KeyValuePair<string, SocketError>>? ApplySocketOptions()
    {
        List<KeyValuePair<string, SocketError>>? failures = null;
        if (!Has(ConnectionFlags.NonBlockingAlready))
        {
            try
            {
                _socket.Blocking = false;
            }
            catch (SocketException e)
            {
                Note(ref failures, "O_NONBLOCK", e.SocketErrorCode);
            }
        }

        ConnectionSettings settings = _settings;
        bool tcp = SocketSetup.IsTcp(_socket);
        if (settings.NoDelay && tcp)
        {
            try
            {
                _socket.NoDelay = true;
            }
            catch (SocketException e)
            {
                Note(ref failures, "TCP_NODELAY", e.SocketErrorCode);
            }
        }

        if (settings.KeepAlive)
        {
            Note(ref failures, "SO_KEEPALIVE", SocketOptionSetter.SetKeepAlive(_socket));
            if (tcp)
            {
                if (settings.KeepAliveTimeSeconds != 0)
                {
                    Note(ref failures, "TCP_KEEPIDLE", SocketOptionSetter.SetKeepAliveTime(_socket, settings.KeepAliveTimeSeconds));
                }

                if (settings.KeepAliveIntervalSeconds != 0)
                {
                    Note(ref failures, "TCP_KEEPINTVL", SocketOptionSetter.SetKeepAliveInterval(_socket, settings.KeepAliveIntervalSeconds));
                }

                if (settings.KeepAliveRetryCount != 0)
                {
                    Note(ref failures, "TCP_KEEPCNT", SocketOptionSetter.SetKeepAliveRetryCount(_socket, settings.KeepAliveRetryCount));
                }
            }
        }

        if (settings.SocketSendBufferSize != 0)
        {
            Note(ref failures, "SO_SNDBUF", SocketOptionSetter.SetSendBufferSize(_socket, settings.SocketSendBufferSize));
        }

        if (settings.SocketReceiveBufferSize != 0)
        {
            Note(ref failures, "SO_RCVBUF", SocketOptionSetter.SetReceiveBufferSize(_socket, settings.SocketReceiveBufferSize));
        }

        if (settings.LingerSeconds != 0)
        {
            Note(ref failures, "SO_LINGER", SocketOptionSetter.SetLinger(_socket, settings.LingerSeconds));
        }

        return failures;

        static void Note(ref List<KeyValuePair<string, SocketError>>? failures, string option, SocketError error)
        {
            if (error != SocketError.Success)
            {
                (failures ??= new List<KeyValuePair<string, SocketError>>()).Add(new KeyValuePair<string, SocketError>(option, error));
            }
        }
    }

    /// <summary>The connection's socket, for tests that read its options back from the kernel.</summary>
    internal Socket SocketForTests => _socket;
}
