#if NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// The net8.0-and-later way to set a raw option: Socket.SetRawSocketOption.
internal static partial class SocketSetup
{
    /// <summary>Sets a boolean <c>SOL_SOCKET</c> option to 1 through the raw option call (no .NET mapping in between).</summary>
    private static void SetFlag(Socket socket, int option)
    {
        Span<byte> one = stackalloc byte[sizeof(int)];
        BitConverter.TryWriteBytes(one, 1);
        socket.SetRawSocketOption(SocketConstants.SolSocket, option, one);
    }
}
#endif
