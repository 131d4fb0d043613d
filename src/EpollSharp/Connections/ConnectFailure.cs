using System.Net;

namespace EpollSharp.Connections;

/// <summary>
/// Why an outbound connection failed: passed to <see cref="ConnectionHandler.OnConnectFailed"/> by <see cref="Connection.Connect"/>,
/// and carried by the <see cref="ConnectException"/> of <see cref="Connection.ConnectAsync"/>.
/// </summary>
public sealed class ConnectFailure
{
    internal ConnectFailure(EndPoint endPoint, ConnectFailureReason reason, System.Net.Sockets.SocketError socketError, EndPoint? lastAddress, object? userState)
    {
        UserState = userState;
        EndPoint = endPoint;
        Reason = reason;
        SocketError = socketError;
        LastAddress = lastAddress;
    }

    /// <summary>The endpoint that was to be connected to, as it was given.</summary>
    public EndPoint EndPoint { get; }

    /// <summary>The kind of failure.</summary>
    public ConnectFailureReason Reason { get; }

    /// <summary>
    /// The socket error: the one the connect ended with (read from <c>SO_ERROR</c>, or reported by the backend with the
    /// event), the resolver's for <see cref="ConnectFailureReason.NameNotFound"/>, <see cref="System.Net.Sockets.SocketError.TimedOut"/>
    /// for the connect timeout, <see cref="System.Net.Sockets.SocketError.OperationAborted"/> for a cancellation or a disposed loop.
    /// </summary>
    public System.Net.Sockets.SocketError SocketError { get; }

    /// <summary>
    /// The address tried last (for a <see cref="DnsEndPoint"/>, one of its resolved addresses; when several were tried, the
    /// failure is that of the last one), or <see langword="null"/> when none was tried (the name did not resolve, or the attempt
    /// was canceled first).
    /// </summary>
    public EndPoint? LastAddress { get; }

    /// <summary>The object given to <see cref="Connection.Connect"/> as its <c>userState</c> (which a connection that is made gets as its <see cref="Connection.UserState"/>).</summary>
    public object? UserState { get; }

    /// <summary>A sentence saying what failed and why.</summary>
    /// <returns>The description.</returns>
    public override string ToString() =>
        $"Connecting to {EndPoint} failed: {Reason} ({SocketError})" + (LastAddress is not null && !LastAddress.Equals(EndPoint) ? $", last address tried {LastAddress}." : ".");
}
