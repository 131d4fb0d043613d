using System;

namespace EpollSharp;

/// <summary>The readiness delivered to a registration's callback. Several flags may be set at once.</summary>
/// <remarks>
/// Readiness is a hint, not a promise: a read or write may still return "would block" (spurious
/// readiness is possible on every backend). Always handle <c>EAGAIN</c> / <see cref="System.Net.Sockets.SocketError.WouldBlock"/>.
/// </remarks>
[Flags]
public enum Readiness
{
    /// <summary>Nothing.</summary>
    None = 0,

    /// <summary>The handle is readable: data, a pending connection, or end of stream.</summary>
    Readable = 1,

    /// <summary>The handle is writable.</summary>
    Writable = 2,

    /// <summary>The peer shut down its sending side (half-close, <c>EPOLLRDHUP</c>): a read returns end of stream once the buffered data is read.</summary>
    ReadClosed = 4,

    /// <summary>The connection hung up (<c>EPOLLHUP</c>): both directions are closed. Delivered even with <see cref="Interest.None"/>.</summary>
    Closed = 8,

    /// <summary>An error is pending on the handle (<c>EPOLLERR</c>), e.g. a reset or a failed connect. Delivered even with <see cref="Interest.None"/>.</summary>
    Error = 16,
}
