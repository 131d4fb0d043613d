using System;
using System.Net;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

// Outbound connections: the public entry points, and what a dialed connection needs that an accepted one does not.
public sealed partial class Connection
{
    private static readonly Action<object?> s_onDialLoopReleased = static state => ((Connection)state!).AbortFor(ConnectionCloseReason.LoopDisposed);

    /// <summary>
    /// For a dialed connection (no listener closes it when its loop goes): the hook that resets it when the loop is released,
    /// removed when it closes.
    /// </summary>
    private EventLoop.ReleaseHook? _dialReleaseHook;

    /// <summary>
    /// Connects to <paramref name="endPoint"/> from <paramref name="loop"/>; the connection, once made, is served by
    /// <paramref name="handler"/> exactly like an accepted one (<see cref="ConnectionHandler.OnConnected"/> first), with
    /// <see cref="Listener"/> null. A failure is reported to <see cref="ConnectionHandler.OnConnectFailed"/> on the loop thread,
    /// never thrown there. Returns at once; every step runs on the loop.
    /// </summary>
    /// <remarks>
    /// <para>The connect is non-blocking: it completes when the socket becomes writable, and its outcome is read from
    /// <c>SO_ERROR</c> (or from the event, on kqueue). A <see cref="DnsEndPoint"/> is resolved on the thread pool, never on the
    /// loop, and its addresses are tried in order until one connects; the failure reported is the last one's.
    /// <see cref="ConnectOptions.ConnectTimeout"/> bounds the whole attempt.</para>
    /// <para>Exactly one of <see cref="ConnectionHandler.OnConnected"/> and <see cref="ConnectionHandler.OnConnectFailed"/> is called
    /// per call, unless the handler's own callback throws.</para>
    /// </remarks>
    /// <param name="loop">The loop the connection will live on. It may be running or not yet started.</param>
    /// <param name="endPoint">An <see cref="IPEndPoint"/>, a <see cref="DnsEndPoint"/>, or a <c>UnixDomainSocketEndPoint</c>.</param>
    /// <param name="handler">The connection's handler; also told of a failure.</param>
    /// <param name="options">The timeout and the connection's settings; null for the defaults. Read once, here.</param>
    /// <param name="userState">Becomes the connection's <see cref="UserState"/> before <see cref="ConnectionHandler.OnConnected"/>, or the failure's <see cref="ConnectFailure.UserState"/>.</param>
    /// <param name="cancellationToken">Cancels the attempt (<see cref="ConnectFailureReason.Canceled"/>) until the connection is made; no effect after.</param>
    /// <exception cref="ArgumentNullException"><paramref name="loop"/>, <paramref name="endPoint"/> or <paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="endPoint"/> is not one of the kinds above, or has port 0, or a wildcard address; or the connection options are inconsistent.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="loop"/> was disposed.</exception>
    public static void Connect(EventLoop loop, EndPoint endPoint, ConnectionHandler handler, ConnectOptions? options = null, object? userState = null, CancellationToken cancellationToken = default)
    {
        Validate(loop, endPoint, handler);
        _ = new Connector(loop, endPoint, handler, options ?? new ConnectOptions(), userState, withTask: false, cancellationToken);
    }

    /// <summary>
    /// Connects to <paramref name="endPoint"/> from <paramref name="loop"/>, as <see cref="Connect"/> does, and returns the
    /// connection through a task: it completes after <see cref="ConnectionHandler.OnConnected"/> has run on the loop (the
    /// connection may already have closed by the time you see it), faults with a <see cref="ConnectException"/> on failure,
    /// or is canceled by <paramref name="cancellationToken"/>. <see cref="ConnectionHandler.OnConnectFailed"/> is not called.
    /// </summary>
    /// <remarks>
    /// The task's continuations never run inline on the loop thread. The connection's methods must still be called on
    /// its loop: from the handler, or with <c>connection.Loop.Post</c>.
    /// </remarks>
    /// <param name="loop">The loop the connection will live on. It may be running or not yet started.</param>
    /// <param name="endPoint">An <see cref="IPEndPoint"/>, a <see cref="DnsEndPoint"/>, or a <c>UnixDomainSocketEndPoint</c>.</param>
    /// <param name="handler">The connection's handler.</param>
    /// <param name="options">The timeout and the connection's settings; null for the defaults. Read once, here.</param>
    /// <param name="cancellationToken">Cancels the attempt until the connection is made; no effect after.</param>
    /// <returns>The connection.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="loop"/>, <paramref name="endPoint"/> or <paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="endPoint"/> is not one of the kinds above, or has port 0, or a wildcard address; or the connection options are inconsistent.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="loop"/> was disposed.</exception>
    public static Task<Connection> ConnectAsync(EventLoop loop, EndPoint endPoint, ConnectionHandler handler, ConnectOptions? options = null, CancellationToken cancellationToken = default)
    {
        Validate(loop, endPoint, handler);
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<Connection>(cancellationToken);
        }

        return new Connector(loop, endPoint, handler, options ?? new ConnectOptions(), userState: null, withTask: true, cancellationToken).Task;
    }

    private static void Validate(EventLoop loop, EndPoint endPoint, ConnectionHandler handler)
    {
        if (loop is null)
        {
            throw new ArgumentNullException(nameof(loop));
        }

        if (endPoint is null)
        {
            throw new ArgumentNullException(nameof(endPoint));
        }

        if (handler is null)
        {
            throw new ArgumentNullException(nameof(handler));
        }

        Connector.ValidateEndPoint(endPoint);
    }

    /// <summary>A dialed connection is about to start: it will be reset when its loop is released. False when the loop was disposed.</summary>
    internal bool TrackDialed()
    {
        try
        {
            _dialReleaseHook = Loop.AddReleaseHook(s_onDialLoopReleased, this);
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>A dialed connection closed: its loop's release has nothing left to close.</summary>
    private void ForgetDialed()
    {
        if (_dialReleaseHook is { } hook)
        {
            _dialReleaseHook = null;
            Loop.RemoveReleaseHook(hook);
        }
    }
}
