#if NET5_0_OR_GREATER
using System.Net.Sockets;

namespace EpollSharp.Connections;

// The keep-alive timings through .NET's own names (SocketOptionName.TcpKeepAliveTime, ...: .NET Core 3.0 and later).
internal static partial class SocketOptionSetter
{
    /// <summary><c>TCP_KEEPIDLE</c>, in seconds.</summary>
    internal static SocketError SetKeepAliveTime(Socket socket, int seconds) =>
        Try(static (s, v) => s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, v), socket, seconds);

    /// <summary><c>TCP_KEEPINTVL</c>, in seconds.</summary>
    internal static SocketError SetKeepAliveInterval(Socket socket, int seconds) =>
        Try(static (s, v) => s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, v), socket, seconds);

    /// <summary><c>TCP_KEEPCNT</c>.</summary>
    internal static SocketError SetKeepAliveRetryCount(Socket socket, int count) =>
        Try(static (s, v) => s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, v), socket, count);
}
#endif
