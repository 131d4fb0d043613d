namespace EpollSharp.Connections;

/// <summary>Why a <see cref="Connection"/> ended. Read it in <see cref="ConnectionHandler.OnClosed(Connection)"/> from <see cref="Connection.CloseReason"/>.</summary>
public enum ConnectionCloseReason
{
    /// <summary>The connection is still open.</summary>
    None = 0,

    /// <summary>
    /// Both directions ended in order: every buffered byte was sent, the sending side was shut down (FIN), and the
    /// peer's end of stream was read. This is how a graceful <see cref="Connection.Close()"/>, or a
    /// <see cref="Connection.Shutdown"/> answered by the peer's half-close, ends.
    /// </summary>
    Completed = 1,

    /// <summary><see cref="Connection.Abort"/> was called: the connection was reset (RST, linger 0) and buffered output dropped.</summary>
    Aborted = 2,

    /// <summary>The peer reset the connection (<c>ECONNRESET</c>, <c>ECONNABORTED</c>). <see cref="Connection.SocketError"/> has the detail.</summary>
    Reset = 3,

    /// <summary>A send failed because the peer is gone (<c>EPIPE</c>, reported by .NET as <see cref="System.Net.Sockets.SocketError.Shutdown"/>). Never a signal: .NET ignores <c>SIGPIPE</c>.</summary>
    /// <remarks>
    /// Linux reports a reset that comes after the peer's end of stream (a peer that closed its socket without reading what
    /// was still sent to it) as <c>EPIPE</c>, not <c>ECONNRESET</c>: such a peer ends a connection as <see cref="Reset"/>
    /// or as <see cref="BrokenPipe"/> depending on whether its end of stream arrived first, on every backend. Treat the
    /// two alike: the peer is gone.
    /// </remarks>
    BrokenPipe = 4,

    /// <summary>Another socket error ended the connection; see <see cref="Connection.SocketError"/>.</summary>
    SocketError = 5,

    /// <summary>Nothing was received or sent for <see cref="ConnectionOptions.IdleTimeout"/>. The connection was closed (reset when output was still buffered).</summary>
    IdleTimeout = 6,

    /// <summary>A graceful close did not finish before its deadline (<see cref="ConnectionOptions.CloseTimeout"/> or the shutdown's drain deadline): the connection was reset.</summary>
    CloseTimeout = 7,

    /// <summary>A <see cref="Connection.Write(System.ReadOnlySpan{byte})"/> would have buffered more than <see cref="ConnectionOptions.MaxBufferedBytes"/>: the connection was reset.</summary>
    OutputLimitExceeded = 8,

    /// <summary>A handler callback (or offloaded work) threw: the connection was reset and the exception passed on to the loop's <see cref="EventLoopOptions.UnhandledExceptionHandler"/>.</summary>
    HandlerFault = 9,

    /// <summary>The listener or group shut down and its drain deadline passed while the connection was still open: the connection was reset.</summary>
    ShutdownTimeout = 10,

    /// <summary>The listener or group was disposed without a graceful shutdown: the connection was reset.</summary>
    ListenerDisposed = 11,

    /// <summary>
    /// The connection's loop was disposed (or, in an <see cref="EventLoopGroup"/>, ended by an unhandled exception and then
    /// disposed by the group) while the connection was open: the connection was reset.
    /// </summary>
    LoopDisposed = 12,
}
