using System;

namespace EpollSharp.Connections;

/// <summary>
/// What a server does with its connections. One instance usually serves every connection of a listener (keep
/// per-connection state in <see cref="Connection.UserState"/>); every method is called on the connection's loop thread,
/// one at a time per loop, so a handler shared by several loops (an <see cref="EventLoopGroup"/>) must make its own
/// shared state thread-safe.
/// </summary>
/// <remarks>
/// <para>Order of calls for one connection: <see cref="OnConnected"/> first; then any number of <see cref="OnReceived"/>,
/// <see cref="OnWritePaused"/> / <see cref="OnWriteResumed"/>, at most one <see cref="OnReadClosed"/> and at most one
/// <see cref="OnShutdownRequested"/>; <see cref="OnClosed"/> last, exactly once. <see cref="OnClosed"/> is deferred to the
/// end of the callback in which the connection closed, so it never runs in the middle of your own code.</para>
/// <para>A callback that throws resets its connection (<see cref="ConnectionCloseReason.HandlerFault"/>); the exception then
/// reaches the loop's <see cref="EventLoopOptions.UnhandledExceptionHandler"/> (without one, the loop stops and rethrows it).</para>
/// <para>Callbacks run on the loop thread: work that takes long (CPU-bound work, blocking calls) stalls every other connection
/// of the loop. Move it off with <see cref="Connection.Offload{TResult}(Func{TResult}, Action{Connection, TResult})"/>.</para>
/// </remarks>
public abstract class ConnectionHandler
{
    /// <summary>A connection was accepted (or dialed, by <see cref="Connection.Connect"/> or <see cref="Connection.ConnectAsync"/>) and registered with its loop. You may write (a greeting) or set <see cref="Connection.UserState"/>.</summary>
    /// <param name="connection">The new connection.</param>
    public virtual void OnConnected(Connection connection)
    {
    }

    /// <summary>
    /// Setting a socket option on the new connection failed (for example <c>TCP_NODELAY</c> for
    /// <see cref="ConnectionOptions.NoDelay"/>, <c>SO_SNDBUF</c> for <see cref="ConnectionOptions.SocketSendBufferSize"/>).
    /// The connection carries on without the option, and the other options are still set; this reports it, right after
    /// <see cref="OnConnected"/>, once for each option that failed. Options that only TCP has are never applied to other sockets (Unix domain sockets), so
    /// this does not happen for them. The default does nothing; override it to log, or to <see cref="Connection.Abort"/>
    /// a connection that must not run without the option.
    /// </summary>
    /// <param name="connection">The connection.</param>
    /// <param name="option">The option's C name: <c>O_NONBLOCK</c>, <c>TCP_NODELAY</c>, <c>SO_KEEPALIVE</c>, <c>TCP_KEEPIDLE</c>, <c>TCP_KEEPINTVL</c>, <c>TCP_KEEPCNT</c>, <c>SO_SNDBUF</c>, <c>SO_RCVBUF</c> or <c>SO_LINGER</c>.</param>
    /// <param name="error">The error the system returned.</param>
    public virtual void OnSocketOptionFailed(Connection connection, string option, System.Net.Sockets.SocketError error)
    {
    }

    /// <summary>
    /// Data arrived. <paramref name="data"/> is a view of a pooled buffer, valid only until this method returns: copy what
    /// you need to keep. Writing it back with <see cref="Connection.Write(ReadOnlySpan{byte})"/> is fine (the write copies
    /// what the kernel does not take at once).
    /// </summary>
    /// <param name="connection">The connection.</param>
    /// <param name="data">The bytes received; never empty.</param>
    public abstract void OnReceived(Connection connection, ReadOnlySpan<byte> data);

    /// <summary>
    /// Memory of the handler's own for the next receive of up to <paramref name="size"/> bytes (readiness backends), or
    /// default for the connection's buffer. The next <see cref="OnReceived"/> then gets a view of it, and the handler may
    /// keep what it lent instead of copying it (the pipes' input on the loop). Called on the loop thread before each read.
    /// </summary>
    internal virtual ArraySegment<byte> GetReceiveBuffer(Connection connection, int size) => default;

    /// <summary>
    /// The peer shut down its sending side (half-close): no more data will arrive, but you may still write.
    /// The default calls <see cref="Connection.Shutdown"/>: finish sending what is buffered, then close.
    /// </summary>
    /// <param name="connection">The connection.</param>
    public virtual void OnReadClosed(Connection connection) => connection.Shutdown();

    /// <summary>
    /// The bytes buffered for sending reached <see cref="ConnectionOptions.HighWatermark"/>: stop producing output.
    /// The default calls <see cref="Connection.PauseReceiving"/>, which is right for a request/response protocol
    /// (no new requests are read while the answers pile up). A producer that writes on its own should wait for
    /// <see cref="OnWriteResumed"/>.
    /// </summary>
    /// <param name="connection">The connection.</param>
    public virtual void OnWritePaused(Connection connection) => connection.PauseReceiving();

    /// <summary>
    /// The buffered bytes drained to <see cref="ConnectionOptions.LowWatermark"/>: produce again.
    /// The default calls <see cref="Connection.ResumeReceiving"/>.
    /// </summary>
    /// <param name="connection">The connection.</param>
    public virtual void OnWriteResumed(Connection connection) => connection.ResumeReceiving();

    /// <summary>
    /// The listener (or group) is shutting down gracefully. The default calls <see cref="Connection.Close()"/>:
    /// the input that already arrived is still delivered, buffered output is flushed, then the connection closes.
    /// Override it to finish the current exchange first; the shutdown's drain deadline resets connections still open then.
    /// </summary>
    /// <param name="connection">The connection.</param>
    public virtual void OnShutdownRequested(Connection connection) => connection.Close();

    /// <summary>The connection ended. <see cref="Connection.CloseReason"/> and <see cref="Connection.SocketError"/> say why. Its socket is already closed.</summary>
    /// <param name="connection">The connection.</param>
    public virtual void OnClosed(Connection connection)
    {
    }

    /// <summary>
    /// A connection started with <see cref="Connection.Connect"/> could not be made: refused, unreachable, timed out, the
    /// name not found, canceled, or its loop disposed (<see cref="ConnectFailure.Reason"/>, with the socket error). Called on
    /// the loop thread, once per failed call, instead of <see cref="OnConnected"/>. <see cref="Connection.ConnectAsync"/> reports
    /// through its task instead and never calls this. The default does nothing: a handler that dials with
    /// <see cref="Connection.Connect"/> overrides it, or the failure goes unseen.
    /// </summary>
    /// <param name="failure">What failed and why; <see cref="ConnectFailure.UserState"/> is the state given to <see cref="Connection.Connect"/>.</param>
    public virtual void OnConnectFailed(ConnectFailure failure)
    {
    }

    /// <summary>
    /// The listener stopped accepting: out of descriptors, at its connection limit, or another accept error. It recovers
    /// by itself; this is to let you log or alert. Called on the listener's loop thread.
    /// </summary>
    /// <param name="listener">The listener.</param>
    /// <param name="episode">The episode; the same object is passed to <see cref="OnAcceptResumed"/>.</param>
    public virtual void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode)
    {
    }

    /// <summary>The listener accepts again. <paramref name="episode"/> tells how long it was paused and how many connections it shed.</summary>
    /// <param name="listener">The listener.</param>
    /// <param name="episode">The episode that ended.</param>
    public virtual void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode)
    {
    }
}
