namespace EpollSharp.Connections;

/// <summary>Why a <see cref="ConnectionListener"/> stopped accepting for a while.</summary>
public enum AcceptPauseReason
{
    /// <summary>
    /// The process (<c>EMFILE</c>) or the system (<c>ENFILE</c>) ran out of file descriptors. The listener retries
    /// with a growing delay (<see cref="ListenerOptions.AcceptRetryDelay"/> up to <see cref="ListenerOptions.MaxAcceptRetryDelay"/>),
    /// and at once when one of its own connections closes.
    /// </summary>
    DescriptorLimit = 1,

    /// <summary>
    /// The listener holds <see cref="ListenerOptions.MaxConnections"/> connections. It resumes as soon as one closes;
    /// new clients wait in the kernel's listen queue meanwhile.
    /// </summary>
    ConnectionLimit = 2,

    /// <summary>The kernel was short of memory for a new socket (<c>ENOBUFS</c>, <c>ENOMEM</c>). Retried like <see cref="DescriptorLimit"/>.</summary>
    ResourceShortage = 3,

    /// <summary>Accept failed with another error (see <see cref="AcceptPauseEpisode.SocketError"/>). Retried like <see cref="DescriptorLimit"/>, so a persistent error never spins a core.</summary>
    Error = 4,
}
