using System.Net.Sockets;

namespace EpollSharp.Connections;

/// <summary>
/// Sets the per-connection socket options of <see cref="ConnectionOptions"/>, each returning the error the system gave
/// rather than throwing (a failed option does not end the connection). The <c>SOL_SOCKET</c> ones go through .NET's
/// mapping, which every target has; the TCP keep-alive timings differ per target framework
/// (<c>SocketOptionSetter.NetCoreApp.cs</c>, <c>SocketOptionSetter.NetStandard.cs</c>).
/// </summary>
internal static partial class SocketOptionSetter
{
    /// <summary><c>SO_KEEPALIVE</c> on.</summary>
    internal static SocketError SetKeepAlive(Socket socket) =>
        Try(static (s, _) => s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true), socket, 0);

    /// <summary><c>SO_SNDBUF</c>.</summary>
    internal static SocketError SetSendBufferSize(Socket socket, int bytes) =>
        Try(static (s, v) => s.SendBufferSize = v, socket, bytes);

    /// <summary><c>SO_RCVBUF</c>.</summary>
    internal static SocketError SetReceiveBufferSize(Socket socket, int bytes) =>
        Try(static (s, v) => s.ReceiveBufferSize = v, socket, bytes);

    /// <summary><c>SO_LINGER</c> on, with <paramref name="seconds"/>.</summary>
    internal static SocketError SetLinger(Socket socket, int seconds) =>
        Try(static (s, v) => s.LingerState = new LingerOption(true, v), socket, seconds);

    private static SocketError Try(System.Action<Socket, int> set, Socket socket, int value)
    {
        try
        {
            set(socket, value);
            return SocketError.Success;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode;
        }
    }
}
