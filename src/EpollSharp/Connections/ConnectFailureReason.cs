namespace EpollSharp.Connections;

/// <summary>Why an outbound connection could not be made. See <see cref="ConnectFailure"/>.</summary>
public enum ConnectFailureReason
{
    /// <summary>Nobody listens at the address: the peer answered with a reset (<c>ECONNREFUSED</c>), or no socket file listens at a Unix socket path.</summary>
    Refused = 1,

    /// <summary>No route to the network or host (<c>ENETUNREACH</c>, <c>EHOSTUNREACH</c>, <c>ENETDOWN</c>, <c>EHOSTDOWN</c>).</summary>
    Unreachable = 2,

    /// <summary>
    /// <see cref="ConnectOptions.ConnectTimeout"/> passed (<see cref="ConnectFailure.SocketError"/> is
    /// <see cref="System.Net.Sockets.SocketError.TimedOut"/>), or the kernel gave up retrying (<c>ETIMEDOUT</c>).
    /// </summary>
    TimedOut = 3,

    /// <summary>The host name of a <see cref="System.Net.DnsEndPoint"/> did not resolve, or resolved to no address of the family asked for.</summary>
    NameNotFound = 4,

    /// <summary>The attempt's <see cref="System.Threading.CancellationToken"/> was canceled.</summary>
    Canceled = 5,

    /// <summary>The loop was disposed while the attempt was under way.</summary>
    LoopDisposed = 6,

    /// <summary>Another socket error; see <see cref="ConnectFailure.SocketError"/>.</summary>
    SocketError = 7,
}
