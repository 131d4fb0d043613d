#if !NET5_0_OR_GREATER
using System.Net.Sockets;
using EpollSharp.Native;

namespace EpollSharp.Connections;

// netstandard2.0 has no names for the keep-alive timings: setsockopt through the library's own import, on Linux.
internal static partial class SocketOptionSetter
{
    /// <summary><c>TCP_KEEPIDLE</c>, in seconds.</summary>
    internal static SocketError SetKeepAliveTime(Socket socket, int seconds) => SetTcp(socket, Interop.SocketOptions.TCP_KEEPIDLE, seconds);

    /// <summary><c>TCP_KEEPINTVL</c>, in seconds.</summary>
    internal static SocketError SetKeepAliveInterval(Socket socket, int seconds) => SetTcp(socket, Interop.SocketOptions.TCP_KEEPINTVL, seconds);

    /// <summary><c>TCP_KEEPCNT</c>.</summary>
    internal static SocketError SetKeepAliveRetryCount(Socket socket, int count) => SetTcp(socket, Interop.SocketOptions.TCP_KEEPCNT, count);

    private static unsafe SocketError SetTcp(Socket socket, int option, int value)
    {
        if (!Platform.IsLinux)
        {
            // This build binds the C library of Linux only, and .NET Standard has no mapping for these options.
            return SocketError.OperationNotSupported;
        }

        if (Interop.Sys.setsockopt((int)socket.Handle, Interop.SocketOptions.IPPROTO_TCP, option, &value, sizeof(int)) != 0)
        {
            return SocketErrors.FromLinuxErrno(Interop.Errno.Last());
        }

        return SocketError.Success;
    }
}
#endif
