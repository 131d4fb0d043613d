using System;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>
/// One outbound connection attempt (<see cref="Connection.Connect"/>, <see cref="Connection.ConnectAsync"/>): resolves a
/// name off the loop, then for each address in turn makes a non-blocking <c>connect</c> and waits on the loop for the
/// socket to become writable, reads the outcome (<see cref="Registration.ReportedSocketError"/>, else <c>SO_ERROR</c>), and
/// either hands the socket to a new <see cref="Connection"/> or tries the next address. Every step after the constructor runs
/// on the loop thread, so the state needs no lock; the end comes once, through <see cref="Established"/> or <see cref="Fail"/>.
/// </summary>
internal sealed class Connector
{
    /// <summary>How long to wait before retrying a Unix socket connect that found the listener's queue full (<c>EAGAIN</c>).</summary>
    private static readonly TimeSpan s_unixRetryDelay = TimeSpan.FromMilliseconds(10);

    private static readonly Action<object?> s_begin = static state => ((Connector)state!).Begin();
    private static readonly Action<object?> s_resolved = static state => ((Connector)state!).OnResolved();
    private static readonly Action<object?> s_canceled = static state => ((Connector)state!).Fail(ConnectFailureReason.Canceled, SocketError.OperationAborted);
    private static readonly Action<object?> s_loopReleased = static state => ((Connector)state!).Fail(ConnectFailureReason.LoopDisposed, SocketError.OperationAborted);
    private static readonly Action<object?> s_postCancel = static state => ((Connector)state!)._loop.TryPost(s_canceled, state);
    private static readonly Action<LoopTimer> s_timedOut = static timer => ((Connector)timer.State!).Fail(ConnectFailureReason.TimedOut, SocketError.TimedOut);
    private static readonly Action<LoopTimer> s_retry = static timer => ((Connector)timer.State!).Attempt();
    private static readonly ReadinessCallback s_onReady = static (registration, readiness) => ((Connector)registration.State!).OnReady(readiness, registration.ReportedSocketError);

    private readonly EventLoop _loop;
    private readonly EndPoint _endPoint;
    private readonly ConnectionHandler _handler;
    private readonly ConnectionSettings _settings;
    private readonly TimeSpan _timeout;
    private readonly Func<string, Task<IPAddress[]>>? _resolver;
    private readonly object? _userState;
    private readonly TaskCompletionSource<Connection>? _completion;
    private readonly CancellationToken _cancellationToken;
    private readonly EventLoop.ReleaseHook _releaseHook;
    private CancellationTokenRegistration _cancellationRegistration;

    // Loop-thread state.
    private Task<IPAddress[]>? _resolve;
    private EndPoint[] _addresses = Array.Empty<EndPoint>();
    private int _next;
    private EndPoint? _current;
    private Socket? _socket;
    private Registration? _registration;
    private LoopTimer? _timer;
    private LoopTimer? _retryTimer;
    private SocketError _lastError = SocketError.HostNotFound;
    private bool _done;

    /// <summary>Starts an attempt: validated arguments, any thread. Throws <see cref="ObjectDisposedException"/> when the loop was disposed.</summary>
    internal Connector(EventLoop loop, EndPoint endPoint, ConnectionHandler handler, ConnectOptions options, object? userState, bool withTask, CancellationToken cancellationToken)
    {
        _loop = loop;
        _endPoint = endPoint;
        _handler = handler;
        _settings = new ConnectionSettings(options.Connection);
        _settings.Logger = loop.LoggerFactory.CreateLogger(ConnectionLog.Category);
        _timeout = options.ConnectTimeout;
        _resolver = options.Resolver;
        _userState = userState;
        _cancellationToken = cancellationToken;
        _completion = withTask ? new TaskCompletionSource<Connection>(TaskCreationOptions.RunContinuationsAsynchronously) : null;

        // Whatever state the attempt is in when the loop is released, it ends then (LoopDisposed), on the loop thread.
        _releaseHook = loop.AddReleaseHook(s_loopReleased, this);
        if (cancellationToken.CanBeCanceled)
        {
            // The callback runs on the canceling thread (at once if the token is canceled already): it only posts the
            // cancellation to the loop. Should that run before this field is set, the registration has fired already and
            // disposing the default value is harmless.
            _cancellationRegistration = cancellationToken.Register(s_postCancel, this);
        }

        if (!loop.TryPost(s_begin, this))
        {
            _cancellationRegistration.Dispose();
            loop.RemoveReleaseHook(_releaseHook);
            throw new ObjectDisposedException(nameof(EventLoop));
        }
    }

    /// <summary>The task of <see cref="Connection.ConnectAsync"/>.</summary>
    internal Task<Connection> Task => _completion!.Task;

    /// <summary>Validates an endpoint for dialing: IP, DNS (with a port) or Unix domain socket.</summary>
    internal static void ValidateEndPoint(EndPoint endPoint)
    {
        switch (endPoint)
        {
            case IPEndPoint ip when ip.Port == 0:
                throw new ArgumentException("An IPEndPoint to connect to needs a port (it is 0).", nameof(endPoint));
            case IPEndPoint ip when ip.Address.Equals(IPAddress.Any) || ip.Address.Equals(IPAddress.IPv6Any):
                throw new ArgumentException("An IPEndPoint to connect to needs an address; " + ip.Address + " is the wildcard.", nameof(endPoint));
            case IPEndPoint:
                return;
            case DnsEndPoint dns when string.IsNullOrWhiteSpace(dns.Host):
                throw new ArgumentException("The DnsEndPoint has no host name.", nameof(endPoint));
            case DnsEndPoint dns when dns.Port == 0:
                throw new ArgumentException("A DnsEndPoint to connect to needs a port (it is 0).", nameof(endPoint));
            case DnsEndPoint dns when dns.AddressFamily is not (AddressFamily.Unspecified or AddressFamily.InterNetwork or AddressFamily.InterNetworkV6):
                throw new ArgumentException("A DnsEndPoint's address family must be Unspecified, InterNetwork or InterNetworkV6, not " + dns.AddressFamily + ".", nameof(endPoint));
            case DnsEndPoint:
                return;
            default:
                if (endPoint.AddressFamily == AddressFamily.Unix)
                {
                    return;
                }

                throw new ArgumentException(
                    "Connections are made to an IPEndPoint, a DnsEndPoint or a UnixDomainSocketEndPoint; " + endPoint.GetType().Name + " (" + endPoint.AddressFamily + ") is none of them.",
                    nameof(endPoint));
        }
    }

    /// <summary>The first step on the loop: the timeout, then resolution or the connect.</summary>
    private void Begin()
    {
        if (_done)
        {
            return;
        }

        if (_cancellationToken.IsCancellationRequested)
        {
            Fail(ConnectFailureReason.Canceled, SocketError.OperationAborted);
            return;
        }

        if (_timeout != Timeout.InfiniteTimeSpan)
        {
            _timer = _loop.Schedule(_timeout, s_timedOut, this);
        }

        if (_endPoint is DnsEndPoint dns)
        {
            // Resolution never blocks the loop: it starts on the thread pool (the resolver may block in getaddrinfo) and
            // its outcome is posted back. A loop released meanwhile has ended the attempt already (LoopDisposed).
            Func<string, Task<IPAddress[]>>? resolver = _resolver;
            _resolve = System.Threading.Tasks.Task.Run(() => resolver is null ? Dns.GetHostAddressesAsync(dns.Host) : resolver(dns.Host));
            _resolve.ContinueWith(static (_, state) => ((Connector)state!)._loop.TryPost(s_resolved, state), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return;
        }

        _addresses = new[] { _endPoint };
        TryNextAddress();
    }

    /// <summary>The name resolved (or did not): on the loop thread.</summary>
    private void OnResolved()
    {
        if (_done)
        {
            return;
        }

        var dns = (DnsEndPoint)_endPoint;
        Task<IPAddress[]> resolve = _resolve!;
        if (!resolve.IsCompleted || resolve.IsFaulted || resolve.IsCanceled)
        {
            SocketError error = resolve.Exception?.GetBaseException() is SocketException e ? e.SocketErrorCode : SocketError.HostNotFound;
            Fail(ConnectFailureReason.NameNotFound, error);
            return;
        }

        IPAddress[] resolved = resolve.Result;
        var addresses = new System.Collections.Generic.List<EndPoint>(resolved.Length);
        foreach (IPAddress address in resolved)
        {
            if (dns.AddressFamily == AddressFamily.Unspecified || address.AddressFamily == dns.AddressFamily)
            {
                addresses.Add(new IPEndPoint(address, dns.Port));
            }
        }

        if (addresses.Count == 0)
        {
            Fail(ConnectFailureReason.NameNotFound, SocketError.HostNotFound);
            return;
        }

        _addresses = addresses.ToArray();
        TryNextAddress();
    }

    /// <summary>Starts the connect to the next address, or fails with the last error when every address failed.</summary>
    private void TryNextAddress()
    {
        while (!_done && _next < _addresses.Length)
        {
            _current = _addresses[_next++];
            Socket socket;
            try
            {
                socket = new Socket(_current.AddressFamily, SocketType.Stream, _current is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified);
                socket.Blocking = false;
            }
            catch (SocketException e)
            {
                // This address family is not available here (IPv6 disabled, say): try the next address.
                _lastError = e.SocketErrorCode;
                continue;
            }

            _socket = socket;
            Attempt();
            return;
        }

        if (!_done)
        {
            Fail(Classify(_lastError, _current), _lastError);
        }
    }

    /// <summary>Calls <c>connect</c> on <see cref="_socket"/>: done at once, in progress (wait for writability), or failed.</summary>
    private void Attempt()
    {
        if (_done || _socket is null)
        {
            return;
        }

        Socket socket = _socket;
        try
        {
            socket.Connect(_current!);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress or SocketError.AlreadyInProgress)
        {
            if (_current!.AddressFamily == AddressFamily.Unix)
            {
                // A Unix socket connect does not go on in the background: EAGAIN means the listener's queue is full, and
                // the socket is not connecting. Try again shortly (the connect timeout bounds the retries).
                _retryTimer ??= _loop.Schedule(s_unixRetryDelay, s_retry, this);
                if (!_retryTimer.IsActive)
                {
                    _retryTimer.Change(s_unixRetryDelay);
                }

                return;
            }

            try
            {
                _registration = _loop.Register(socket, Interest.Writable, s_onReady, this);
            }
            catch (ObjectDisposedException)
            {
                Fail(ConnectFailureReason.LoopDisposed, SocketError.OperationAborted);
            }

            return;
        }
        catch (SocketException e)
        {
            AddressFailed(e.SocketErrorCode);
            return;
        }
        catch (ObjectDisposedException)
        {
            Fail(ConnectFailureReason.LoopDisposed, SocketError.OperationAborted);
            return;
        }

        Established();
    }

    /// <summary>The socket of a connect in progress is writable, or reported an error or hang-up: the connect ended.</summary>
    private void OnReady(Readiness readiness, SocketError reported)
    {
        if (_done || _registration is null)
        {
            return;
        }

        // kqueue hands the error over with the event, and over libkqueue SO_ERROR is then already consumed; elsewhere it is
        // pending on the socket (reading it clears it).
        SocketError error = reported;
        if (error == SocketError.Success)
        {
            try
            {
                error = (SocketError)(int)_socket!.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            }
            catch (SocketException e)
            {
                error = e.SocketErrorCode;
            }
        }

        if (error == SocketError.Success && (readiness & Readiness.Writable) == 0)
        {
            if ((readiness & (Readiness.Error | Readiness.Closed)) == 0)
            {
                return;
            }

            // A hang-up whose error was consumed: the connect failed, the cause is unknown.
            error = SocketError.NotConnected;
        }

        _registration.Dispose();
        _registration = null;
        if (error == SocketError.Success)
        {
            Established();
        }
        else
        {
            AddressFailed(error);
        }
    }

    /// <summary>The connect to <see cref="_current"/> failed with <paramref name="error"/>: close its socket and try the next address.</summary>
    private void AddressFailed(SocketError error)
    {
        _lastError = error;
        _socket?.Dispose();
        _socket = null;
        TryNextAddress();
    }

    /// <summary>The socket is connected: hand it to a new <see cref="Connection"/>, start that, and complete the attempt.</summary>
    private void Established()
    {
        Socket socket = _socket!;
        _socket = null;
        var connection = new Connection(listener: null, _loop, socket, _handler, _settings) { UserState = _userState };
        if (!connection.TrackDialed())
        {
            socket.Dispose();
            Fail(ConnectFailureReason.LoopDisposed, SocketError.OperationAborted);
            return;
        }

        connection.CountOpened();
        _done = true;
        ReleaseResources();
        try
        {
            // Registers the socket for reading and calls OnConnected, as for an accepted connection.
            connection.Start();
        }
        finally
        {
            _completion?.TrySetResult(connection);
        }
    }

    /// <summary>Ends the attempt with a failure, once: the task faults (or is canceled), or the handler hears of it.</summary>
    private void Fail(ConnectFailureReason reason, SocketError error)
    {
        if (_done)
        {
            return;
        }

        _done = true;
        _socket?.Dispose();
        _socket = null;
        ReleaseResources();
        var failure = new ConnectFailure(_endPoint, reason, error, _current, _userState);
        ConnectionLog.ConnectFailed(_settings.Logger, _endPoint, reason, error, _current);
        if (_completion is null)
        {
            _handler.OnConnectFailed(failure);
        }
        else if (reason == ConnectFailureReason.Canceled)
        {
            _completion.TrySetCanceled(_cancellationToken);
        }
        else
        {
            _completion.TrySetException(new ConnectException(failure));
        }
    }

    /// <summary>Drops what the attempt holds on the loop: the registration, the timers, the cancellation callback, the release hook.</summary>
    private void ReleaseResources()
    {
        _registration?.Dispose();
        _registration = null;
        _timer?.Cancel();
        _retryTimer?.Cancel();
        _cancellationRegistration.Dispose();
        _loop.RemoveReleaseHook(_releaseHook);
    }

    /// <summary>Names the attempt in reports (such as <see cref="EventLoop.SlowCallback"/>'s).</summary>
    public override string ToString() => "connecting to " + _endPoint + ", handler " + _handler.GetType().Name;

    /// <summary>The reason for a connect that ended with <paramref name="error"/> (internal for the tests of the mapping).</summary>
    internal static ConnectFailureReason Classify(SocketError error, EndPoint? address) => error switch
    {
        SocketError.ConnectionRefused => ConnectFailureReason.Refused,

        // ENOENT: no socket file at the path, which is how nobody listening shows for a Unix socket.
        SocketError.AddressNotAvailable when address?.AddressFamily == AddressFamily.Unix => ConnectFailureReason.Refused,
        SocketError.NetworkUnreachable or SocketError.HostUnreachable or SocketError.NetworkDown or SocketError.HostDown => ConnectFailureReason.Unreachable,
        SocketError.TimedOut => ConnectFailureReason.TimedOut,
        SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => ConnectFailureReason.NameNotFound,
        _ => ConnectFailureReason.SocketError,
    };
}
