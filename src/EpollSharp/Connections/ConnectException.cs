using System.Net.Sockets;

namespace EpollSharp.Connections;

/// <summary>The exception of a failed <see cref="Connection.ConnectAsync"/>: a <see cref="SocketException"/> whose <see cref="SocketException.SocketErrorCode"/> is <see cref="ConnectFailure.SocketError"/>.</summary>
public sealed class ConnectException : SocketException
{
    /// <summary>Creates the exception for <paramref name="failure"/>.</summary>
    /// <param name="failure">What failed.</param>
    /// <exception cref="System.ArgumentNullException"><paramref name="failure"/> is null.</exception>
    public ConnectException(ConnectFailure failure)
        : base((int)(failure ?? throw new System.ArgumentNullException(nameof(failure))).SocketError)
    {
        Failure = failure;
    }

    /// <summary>What failed, and why.</summary>
    public ConnectFailure Failure { get; }

    /// <summary>The kind of failure (<see cref="ConnectFailure.Reason"/>).</summary>
    public ConnectFailureReason Reason => Failure.Reason;

    /// <inheritdoc/>
    public override string Message => Failure.ToString();
}
