using System.Net.Sockets;
using B = EpollSharp.Interop.ErrnoBsd;
using E = EpollSharp.Interop.Errno;

namespace EpollSharp.Native;

/// <summary>
/// Socket errno values as the <see cref="SocketError"/> that <see cref="Socket"/> reports for them: one table for Linux
/// (<c>recv</c>/<c>send</c> on the direct path, and libkqueue's <c>fflags</c>), one for macOS and FreeBSD (the kernels'
/// <c>fflags</c>). A value without a name becomes <see cref="SocketError.SocketError"/>.
/// </summary>
internal static class SocketErrors
{
    /// <summary>A Linux errno.</summary>
    internal static SocketError FromLinuxErrno(int errno) => errno switch
    {
        E.EAGAIN => SocketError.WouldBlock,
        E.EINTR => SocketError.Interrupted,
        E.ECONNRESET => SocketError.ConnectionReset,
        E.EPIPE => SocketError.Shutdown,
        E.ECONNABORTED => SocketError.ConnectionAborted,
        E.ETIMEDOUT => SocketError.TimedOut,
        E.ENOTCONN => SocketError.NotConnected,
        E.EHOSTUNREACH => SocketError.HostUnreachable,
        E.ENETUNREACH => SocketError.NetworkUnreachable,
        E.ENETDOWN => SocketError.NetworkDown,
        E.ENETRESET => SocketError.NetworkReset,
        E.EHOSTDOWN => SocketError.HostDown,
        E.ECONNREFUSED => SocketError.ConnectionRefused,
        E.ENOBUFS => SocketError.NoBufferSpaceAvailable,
        E.EMSGSIZE => SocketError.MessageSize,
        E.ESHUTDOWN => SocketError.Disconnecting,
        E.EBADF => SocketError.OperationAborted,
        E.EINVAL => SocketError.InvalidArgument,
        E.EFAULT => SocketError.Fault,
        E.ENOTSOCK => SocketError.NotSocket,
        E.EOPNOTSUPP => SocketError.OperationNotSupported,
        E.EACCES or E.EPERM => SocketError.AccessDenied,
        E.EMFILE or E.ENFILE => SocketError.TooManyOpenSockets,
        _ => SocketError.SocketError,
    };

    /// <summary>
    /// A macOS or FreeBSD errno, as a socket's pending error (<c>so_error</c>) can hold it. The values below 35 are the
    /// same as Linux's; EOPNOTSUPP, which the two systems number differently, is not a pending socket error and is not
    /// mapped.
    /// </summary>
    internal static SocketError FromBsdErrno(int errno) => errno switch
    {
        B.EAGAIN => SocketError.WouldBlock,
        E.EINTR => SocketError.Interrupted,
        B.ECONNRESET => SocketError.ConnectionReset,
        B.EPIPE => SocketError.Shutdown,
        B.ECONNABORTED => SocketError.ConnectionAborted,
        B.ETIMEDOUT => SocketError.TimedOut,
        B.ENOTCONN => SocketError.NotConnected,
        B.EHOSTUNREACH => SocketError.HostUnreachable,
        B.ENETUNREACH => SocketError.NetworkUnreachable,
        B.ENETDOWN => SocketError.NetworkDown,
        B.ENETRESET => SocketError.NetworkReset,
        B.EHOSTDOWN => SocketError.HostDown,
        B.ECONNREFUSED => SocketError.ConnectionRefused,
        B.ENOBUFS => SocketError.NoBufferSpaceAvailable,
        B.EMSGSIZE => SocketError.MessageSize,
        B.ESHUTDOWN => SocketError.Disconnecting,
        B.ENOTSOCK => SocketError.NotSocket,
        E.EBADF => SocketError.OperationAborted,
        E.EINVAL => SocketError.InvalidArgument,
        E.EFAULT => SocketError.Fault,
        E.EACCES or E.EPERM => SocketError.AccessDenied,
        E.EMFILE or E.ENFILE => SocketError.TooManyOpenSockets,
        _ => SocketError.SocketError,
    };
}
