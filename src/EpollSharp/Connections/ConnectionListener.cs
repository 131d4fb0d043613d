using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;

namespace EpollSharp.Connections;

/// <summary>
/// A listening TCP socket on an <see cref="EventLoop"/>: accepts connections and starts a <see cref="Connection"/> for each,
/// on its own loop or, in a group, round-robin on the group's loops.
/// </summary>
/// <remarks>
/// <para><b>Accepting.</b> When the socket is readable the listener accepts until the queue is empty, at most
/// <see cref="ListenerOptions.MaxAcceptsPerEvent"/> per event so that established connections are not starved. Accepted sockets are
/// non-blocking and close-on-exec (.NET opens every socket close-on-exec).</para>
/// <para><b>Running out.</b> When accept fails for lack of descriptors (<c>EMFILE</c>, <c>ENFILE</c>) or memory, the listener never
/// spins: it stops watching its socket, sheds the pending connection with its reserve descriptor (see
/// <see cref="ListenerOptions.KeepReserveDescriptor"/>), calls <see cref="ConnectionHandler.OnAcceptPaused"/>, and retries after a delay
/// that doubles up to <see cref="ListenerOptions.MaxAcceptRetryDelay"/>, or at once when one of its connections closes. The first
/// successful accept ends the episode (<see cref="ConnectionHandler.OnAcceptResumed"/>). It also pauses before the process runs out:
/// at <see cref="MaxConnections"/> live connections (derived from the descriptor limit by default) it stops accepting until one closes.</para>
/// <para><b>On io_uring.</b> On an io_uring loop whose connections use completions, the listener arms one multishot accept
/// instead of watching its socket: the kernel accepts each connection as it arrives. Pausing cancels the accept (a connection the
/// kernel accepted meanwhile is kept and admitted first when accepting resumes), and stopping waits until the kernel let go of the
/// socket, so the address is free when the listener is closed. Near the connection limit (within <see cref="ListenerOptions.Backlog"/> +
/// <see cref="ListenerOptions.MaxAcceptsPerEvent"/>) it arms one single accept at a time instead, so the limit holds.</para>
/// <para><b>Threads.</b> Every member may be called from any thread. Accepting, and the pause callbacks, run on <see cref="Loop"/>'s thread.</para>
/// </remarks>
public sealed partial class ConnectionListener : IDisposable
{
    private const int NotPaused = 0;
    private const int PausedAtLimit = 1;
    private const int PausedForRetry = 2;

    private static readonly ReadinessCallback s_onAcceptReady = static (registration, _) => ((ConnectionListener)registration.State!).OnAcceptReady();
    private static readonly Action<LoopTimer> s_onRetry = static timer => ((ConnectionListener)timer.State!).Resume();
    private static readonly Action<LoopTimer> s_onDrainExpired = static timer => ((ConnectionListener)timer.State!).OnDrainExpired();
    private static readonly Action<object?> s_resume = static state => ((ConnectionListener)state!).OnResumeSignal();
    private static readonly Action<object?> s_stop = static state => ((ConnectionListener)state!).StopAcceptingOnLoop();
    private static readonly Action<object?> s_start = static state => ((Connection)state!).Start();
    private static readonly Action<object?> s_requestShutdown = static state =>
    {
        var connection = (Connection)state!;
        connection.RequestShutdown(connection.Listener!.DrainDeadline);
    };

    private static readonly Action<object?> s_abortForShutdown = static state => ((Connection)state!).AbortFor(ConnectionCloseReason.ShutdownTimeout);
    private static readonly Action<object?> s_abortForDispose = static state => ((Connection)state!).AbortFor(ConnectionCloseReason.ListenerDisposed);
    private static readonly Action<object?> s_onLoopReleased = static state =>
    {
        var (listener, loop) = ((ConnectionListener, EventLoop))state!;
        listener.OnLoopReleased(loop);
    };

    private readonly Socket _socket;
    private readonly UnixSocketFile? _unixFile;
    private readonly ConnectionHandler _handler;
    private readonly ConnectionSettings _settings;
    private readonly ListenerOptions _options;
    private readonly EventLoop[] _targets;
    private readonly ConnectionBudget _budget;
    /// <summary>The readiness registration of the socket; null when the listener accepts with completions (<see cref="_acceptIo"/>).</summary>
    private readonly Registration? _registration;
    private readonly EventLoop.ReleaseHook?[] _releaseHooks = Array.Empty<EventLoop.ReleaseHook?>();
    private readonly object _trackLock = new();
    private readonly Microsoft.Extensions.Logging.ILogger _log;

    // Loop-thread state.
    private LoopTimer? _retryTimer;
    private Socket? _reserve;
    private AcceptPauseEpisode? _episode;
    private TimeSpan _retryDelay;
    private bool _stopped;
    private int _nextTarget;

    /// <summary>
    /// This side's address of every socket the listener accepts, when it is bound to one address (as the runtime's own
    /// accept does, the connections share the listener's instance); null for a wildcard listener, whose connections each
    /// read their own.
    /// </summary>
    private readonly EndPoint? _acceptedLocalEndPoint;

    // Shared state.
    private int _pauseKind;
    private int _resumePosted;
    private long _accepted;
    private long _shed;

    // Guarded by _trackLock.
    private Connection? _head;
    private int _count;
    private bool _closedToNewConnections;
    private bool _acceptingEnded;
    private TaskCompletionSource<bool>? _drained;
    private int _resetAtDrainDeadline;
    private LoopTimer? _drainTimer;

    /// <summary>Takes <paramref name="socket"/> (listening, non-blocking) and the socket file to remove at stop; closes both if it throws.</summary>
    private ConnectionListener(EventLoop loop, EventLoop[] targets, Socket socket, UnixSocketFile? unixFile, ConnectionHandler handler, ListenerOptions options, ConnectionSettings settings, ConnectionBudget? budget)
    {
        Loop = loop;
        _targets = targets;
        _handler = handler;
        _options = options;
        _settings = settings;
        _retryDelay = options.AcceptRetryDelay;
        _socket = socket;
        _unixFile = unixFile;
        _log = loop.LoggerFactory.CreateLogger(ConnectionLog.Category);
        settings.Logger = _log;
        try
        {
            LocalEndPoint = _socket.LocalEndPoint!;
            _acceptedLocalEndPoint = IsWildcard(LocalEndPoint) ? null : LocalEndPoint;
            _budget = budget ?? new ConnectionBudget(options.MaxConnections != 0 ? options.MaxConnections : DescriptorLimits.DefaultMaxConnections());
            _budget.Add(this);
            if (options.KeepReserveDescriptor)
            {
                TryOpenReserve();
            }

            // Whatever state a loop is in when it is disposed, its release closes what of this listener lives there.
            _releaseHooks = new EventLoop.ReleaseHook[targets.Length];
            for (int i = 0; i < targets.Length; i++)
            {
                _releaseHooks[i] = targets[i].AddReleaseHook(s_onLoopReleased, (this, targets[i]));
            }

            // Last: from here on the loop may call back. On io_uring's completion path, a multishot accept armed on the
            // loop thread (every submission comes from there) instead of a readiness registration.
            _acceptIo = AcceptIoFor(loop);
            if (_acceptIo is null)
            {
                _registration = loop.Register(_socket, Interest.Readable, s_onAcceptReady, this);
            }
            else if (loop.IsOnLoopThread)
            {
                StartAcceptingOnLoop();
            }
            else if (!loop.TryPost(s_startAccept, this))
            {
                throw new ObjectDisposedException(nameof(EventLoop), "The event loop was disposed.");
            }

            ConnectionLog.ListenerStarted(_log, LocalEndPoint, loop.Backend, targets.Length, handler.GetType().Name, _budget.Max);
        }
        catch
        {
            RemoveReleaseHooks();
            _reserve?.Dispose();
            _socket.Dispose();
            _unixFile?.DeleteIfSame();
            throw;
        }
    }

    /// <summary>The loop that accepts.</summary>
    public EventLoop Loop { get; }

    /// <summary>The address the listener is bound to, with the real port when port 0 was asked for.</summary>
    public EndPoint LocalEndPoint { get; }

    /// <summary>The connection limit in force (for a group listening in <see cref="GroupAcceptMode.ReusePort"/> mode, shared by its listeners).</summary>
    public int MaxConnections => _budget.Max;

    /// <summary>How many of this listener's connections are open.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_trackLock)
            {
                return _count;
            }
        }
    }

    /// <summary>How many connections were accepted since the listener started.</summary>
    public long AcceptedCount => Interlocked.Read(ref _accepted);

    /// <summary>How many pending connections were accepted and closed at once for lack of descriptors.</summary>
    public long ShedCount => Interlocked.Read(ref _shed);

    /// <summary>Whether accepting is paused (descriptors exhausted, connection limit, accept error).</summary>
    public bool IsAcceptPaused => Volatile.Read(ref _pauseKind) != NotPaused;

    /// <summary>Names the listener for logs and reports (such as <see cref="EventLoop.SlowCallback"/>'s): its address and its handler's type.</summary>
    /// <returns>For example <c>listener on 127.0.0.1:8080, handler EchoHandler</c>.</returns>
    public override string ToString() => "listener on " + LocalEndPoint + ", handler " + _handler.GetType().Name;

    /// <summary>The handler given to the listener.</summary>
    public ConnectionHandler Handler => _handler;

    /// <summary>The drain deadline of a graceful shutdown as a <see cref="Stopwatch"/> timestamp; 0 for none.</summary>
    internal long DrainDeadline { get; private set; }

    /// <summary>
    /// Binds to <paramref name="endPoint"/>, listens, and starts accepting on <paramref name="loop"/>. Safe from any thread;
    /// the loop may already be running.
    /// </summary>
    /// <param name="loop">The loop that accepts and runs the connections.</param>
    /// <param name="endPoint">Where to listen, e.g. <c>new IPEndPoint(IPAddress.Loopback, 8080)</c>; port 0 picks a free port.</param>
    /// <param name="handler">What to do with the connections.</param>
    /// <param name="options">Options; <see langword="null"/> for the defaults. Copied: later changes have no effect.</param>
    /// <returns>The listener, accepting.</returns>
    /// <exception cref="ArgumentNullException">An argument other than <paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">The connection options do not fit together (see <see cref="ConnectionOptions.Validate"/>), or
    /// <see cref="ListenerOptions.ReusePort"/> was asked for on an endpoint that is not an IP endpoint, or <see cref="ListenerOptions.UnixSocketMode"/>
    /// on one that is not a Unix domain socket path.</exception>
    /// <exception cref="PlatformNotSupportedException"><see cref="ListenerOptions.ReusePort"/> or <see cref="ListenerOptions.UnixSocketMode"/> was asked for on a system other than Linux.</exception>
    /// <exception cref="SocketException">Binding or listening failed: <see cref="SocketError.AddressAlreadyInUse"/> when another socket
    /// listens on the address (unless both asked for <see cref="ListenerOptions.ReusePort"/>).</exception>
    /// <exception cref="System.IO.IOException">A Unix domain socket path holds a file that is not a socket (it is left as it is), or
    /// setting <see cref="ListenerOptions.UnixSocketMode"/> failed.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    /// <remarks>
    /// On a Unix domain socket path, a socket file that no one listens on (a connection to it is refused) is removed before
    /// binding; one that someone listens on is left, and binding fails with <see cref="SocketError.AddressAlreadyInUse"/>. The
    /// file the listener creates is removed when it stops accepting (<see cref="StopAccepting"/>, <see cref="Dispose"/>,
    /// <see cref="ShutdownAsync"/>, its loop disposed), if it is still the same file (same device and inode). Linux only; an
    /// abstract name (<c>new UnixDomainSocketEndPoint("\0name")</c>) has no file.
    /// </remarks>
    public static ConnectionListener Listen(EventLoop loop, EndPoint endPoint, ConnectionHandler handler, ListenerOptions? options = null)
    {
        if (loop is null)
        {
            throw new ArgumentNullException(nameof(loop));
        }

        ListenerOptions copy = options?.Clone() ?? new ListenerOptions();
        return Create(loop, new[] { loop }, endPoint, handler, copy, budget: null, copy.ReusePort ? PortSharing.Join : PortSharing.None);
    }

    internal static ConnectionListener Create(EventLoop loop, EventLoop[] targets, EndPoint endPoint, ConnectionHandler handler, ListenerOptions options, ConnectionBudget? budget, PortSharing sharing)
    {
        if (endPoint is null)
        {
            throw new ArgumentNullException(nameof(endPoint));
        }

        if (handler is null)
        {
            throw new ArgumentNullException(nameof(handler));
        }

        var settings = new ConnectionSettings(options.Connection);
        Socket socket = SocketSetup.CreateListener(endPoint, options, sharing, out UnixSocketFile? file);
        return new ConnectionListener(loop, targets, socket, file, handler, options, settings, budget);
    }

    /// <summary>
    /// Starts accepting on <paramref name="socket"/>, a stream socket the caller opened and bound (and may have put in the
    /// listening state), on <paramref name="loop"/>. The listener takes the socket over: it makes it non-blocking, calls
    /// <c>listen</c> with <see cref="ListenerOptions.Backlog"/> unless the socket listens already (then its backlog stays as
    /// it is), and closes it when it stops accepting. Use this for a socket with options this library does not set, one
    /// bound with elevated rights before they were dropped, or one inherited from a parent process
    /// (<see cref="SocketActivation.TakeSockets"/>). Safe from any thread; the loop may already be running.
    /// </summary>
    /// <param name="loop">The loop that accepts and runs the connections.</param>
    /// <param name="socket">A bound stream socket (TCP or Unix domain), listening or not. Do not use it after the call:
    /// the listener owns it; when the call throws, the socket has been closed.</param>
    /// <param name="handler">What to do with the connections.</param>
    /// <param name="options">Options; <see langword="null"/> for the defaults. Copied. The options of binding
    /// (<see cref="ListenerOptions.ReuseAddress"/>, <see cref="ListenerOptions.DualMode"/>) have no effect, as the socket is bound already.</param>
    /// <returns>The listener, accepting.</returns>
    /// <exception cref="ArgumentNullException">An argument other than <paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="socket"/> is not a stream socket, or is neither listening nor bound;
    /// or <see cref="ListenerOptions.ReusePort"/> or <see cref="ListenerOptions.UnixSocketMode"/> was set (they apply before and
    /// at binding: set them on the socket yourself); or the connection options do not fit together.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="socket"/> was closed, or the loop was disposed.</exception>
    /// <exception cref="SocketException"><c>listen</c> failed.</exception>
    /// <remarks>
    /// The listener never removes a Unix domain socket's file: whoever bound the socket owns it (for systemd, the socket
    /// unit). Note that a <see cref="Socket"/> that .NET itself bound to a path removes that file when it is disposed, which
    /// the listener does when it stops. The listener's <see cref="LocalEndPoint"/> is the socket's address.
    /// </remarks>
    public static ConnectionListener ListenOnSocket(EventLoop loop, Socket socket, ConnectionHandler handler, ListenerOptions? options = null)
    {
        if (loop is null)
        {
            socket?.Dispose();
            throw new ArgumentNullException(nameof(loop));
        }

        ListenerOptions copy = options?.Clone() ?? new ListenerOptions();
        return Adopt(loop, new[] { loop }, socket, handler, copy, budget: null);
    }

    internal static ConnectionListener Adopt(EventLoop loop, EventLoop[] targets, Socket socket, ConnectionHandler handler, ListenerOptions options, ConnectionBudget? budget)
    {
        if (socket is null)
        {
            throw new ArgumentNullException(nameof(socket));
        }

        if (handler is null)
        {
            socket.Dispose();
            throw new ArgumentNullException(nameof(handler));
        }

        ConnectionSettings settings;
        try
        {
            settings = new ConnectionSettings(options.Connection);
            SocketSetup.AdoptListener(socket, options);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new ConnectionListener(loop, targets, socket, unixFile: null, handler, options, settings, budget);
    }

    /// <summary>Stops accepting for good and closes the listening socket; open connections are not affected. Idempotent; safe from any thread.</summary>
    public void StopAccepting()
    {
        if (Loop.IsOnLoopThread || !Loop.TryPost(s_stop, this))
        {
            // On the loop thread, or the loop is gone (then nothing runs on it any more).
            StopAcceptingOnLoop();
        }
    }

    /// <summary>
    /// Shuts down gracefully: stops accepting, then asks each open connection to finish
    /// (<see cref="ConnectionHandler.OnShutdownRequested"/>, by default a graceful <see cref="Connection.Close()"/> whose deadline is
    /// no later than the drain deadline), and resets those still open when <paramref name="drainTimeout"/> has passed
    /// (<see cref="ConnectionCloseReason.ShutdownTimeout"/>). Safe from any thread; calling it again returns the same task.
    /// </summary>
    /// <param name="drainTimeout">How long connections may take to finish; <see cref="Timeout.InfiniteTimeSpan"/> to wait for ever.</param>
    /// <returns>A task that completes when every connection of the listener has closed and its <see cref="ConnectionHandler.OnClosed"/> has run.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="drainTimeout"/> is not infinite, and negative or above 3,650 days.</exception>
    public Task ShutdownAsync(TimeSpan drainTimeout)
    {
        if (!ConnectionSettings.IsValidTimeout(drainTimeout, allowZero: true))
        {
            throw new ArgumentOutOfRangeException(nameof(drainTimeout), drainTimeout, "The drain timeout must be zero or more and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
        }

        Connection[] connections;
        TaskCompletionSource<bool> drained;
        lock (_trackLock)
        {
            if (_drained is not null)
            {
                return _drained.Task;
            }

            drained = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _drained = drained;
            _closedToNewConnections = true;
            DrainDeadline = drainTimeout == Timeout.InfiniteTimeSpan ? 0 : Stopwatch.GetTimestamp() + ConnectionSettings.ToStopwatchTicks(drainTimeout);
            connections = SnapshotLocked();
            if (_count == 0)
            {
                drained.TrySetResult(true);
            }
        }

        ConnectionLog.ShutdownStarted(_log, LocalEndPoint, connections.Length, drainTimeout);

        StopAccepting();
        foreach (Connection connection in connections)
        {
            if (!connection.Loop.TryPost(s_requestShutdown, connection))
            {
                connection.CloseOnDeadLoop();
            }
        }

        if (!drained.Task.IsCompleted && drainTimeout != Timeout.InfiniteTimeSpan)
        {
            try
            {
                LoopTimer timer = Loop.Schedule(drainTimeout, s_onDrainExpired, this);
                lock (_trackLock)
                {
                    _drainTimer = timer;
                }
            }
            catch (ObjectDisposedException)
            {
                AbortAll(ConnectionCloseReason.ShutdownTimeout);
            }
        }

        return drained.Task;
    }

    /// <summary>Stops accepting and resets every open connection (<see cref="ConnectionCloseReason.ListenerDisposed"/>), without waiting. Safe from any thread.</summary>
    public void Dispose()
    {
        lock (_trackLock)
        {
            _closedToNewConnections = true;
        }

        StopAccepting();
        AbortAll(ConnectionCloseReason.ListenerDisposed);
    }

    private void OnAcceptReady()
    {
        if (_stopped || Volatile.Read(ref _pauseKind) != NotPaused)
        {
            return;
        }

        for (int i = 0; i < _options.MaxAcceptsPerEvent; i++)
        {
            if (!_socket.Poll(0, SelectMode.SelectRead))
            {
                // Nothing pending: accepting works (again).
                EndEpisode();
                return;
            }

            if (!_budget.TryAcquire())
            {
                Pause(AcceptPauseReason.ConnectionLimit, SocketError.Success, shed: 0);
                return;
            }

            Socket accepted;
            try
            {
                accepted = _socket.Accept();
            }
            catch (SocketException e)
            {
                _budget.Release();
                if (!OnAcceptError(e.SocketErrorCode))
                {
                    return;
                }

                continue;
            }

            try
            {
                EndEpisode();
            }
            finally
            {
                // Admitted even when OnAcceptResumed throws: the socket and its share of the budget are taken already.
                Admit(accepted, nonBlocking: false);
            }
        }
    }

    /// <summary>Whether <paramref name="endPoint"/> is a wildcard address (any IPv4 or IPv6 address), which an accepted socket's own address is not.</summary>
    private static bool IsWildcard(EndPoint endPoint) =>
        endPoint is IPEndPoint ip &&
        (ip.Address.Equals(IPAddress.Any) || ip.Address.Equals(IPAddress.IPv6Any) ||
         (ip.Address.IsIPv4MappedToIPv6 && ip.Address.MapToIPv4().Equals(IPAddress.Any)));

    /// <summary>Handles a failed accept; returns whether to go on accepting in this pass.</summary>
    private bool OnAcceptError(SocketError error)
    {
        switch (error)
        {
            case SocketError.WouldBlock:
                return false;
            case SocketError.ConnectionAborted:
            case SocketError.ConnectionReset:
            case SocketError.Interrupted:
                // The client gave up before we accepted it; the next one may be fine.
                return true;
            case SocketError.TooManyOpenSockets:
                Pause(AcceptPauseReason.DescriptorLimit, error, Shed());
                return false;
            case SocketError.NoBufferSpaceAvailable:
                Pause(AcceptPauseReason.ResourceShortage, error, shed: 0);
                return false;
            default:
                Pause(AcceptPauseReason.Error, error, shed: 0);
                return false;
        }
    }

    /// <summary>
    /// Starts a connection on <paramref name="accepted"/>. <paramref name="nonBlocking"/>: the backend accepted the socket
    /// non-blocking (the completion path's accept); on the readiness path the runtime's <c>accept4</c> did not.
    /// </summary>
    private void Admit(Socket accepted, bool nonBlocking)
    {
        EventLoop target = _targets.Length == 1 ? _targets[0] : _targets[(int)((uint)_nextTarget++ % (uint)_targets.Length)];
        // The connection makes its socket non-blocking (unless it is already) and applies its options itself when it
        // starts on its loop.
        var connection = new Connection(this, target, accepted, _handler, _settings, _acceptedLocalEndPoint, nonBlocking);
        if (!Track(connection))
        {
            accepted.Dispose();
            _budget.Release();
            return;
        }

        Interlocked.Increment(ref _accepted);
        connection.CountOpened();
        if (target == Loop)
        {
            connection.Start();
        }
        else if (!target.TryPost(s_start, connection))
        {
            connection.CloseOnDeadLoop();
        }
    }

    private void StopAcceptingOnLoop()
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        ConnectionLog.ListenerStopped(_log, LocalEndPoint, AcceptedCount, ConnectionCount);
        if (Interlocked.Exchange(ref _pauseKind, NotPaused) == PausedAtLimit)
        {
            _budget.LeaveWaiting();
        }

        _registration?.Dispose();
        StopAcceptCompletions();
        _retryTimer?.Cancel();
        _socket.Dispose();

        // The socket file goes with the socket (if it is still ours), so that the next server finds the path free.
        _unixFile?.DeleteIfSame();
        _reserve?.Dispose();
        _reserve = null;
        bool removeHooks;
        lock (_trackLock)
        {
            _acceptingEnded = true;
            removeHooks = _count == 0;
        }

        if (removeHooks)
        {
            RemoveReleaseHooks();
        }
    }

}
