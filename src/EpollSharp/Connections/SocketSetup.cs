using System;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Connections;

/// <summary>Creates listening sockets with the options a server wants.</summary>
internal static class SocketSetup
{
    // Linux values: <sys/socket.h> / <asm-generic/socket.h>.
    private const int SolSocket = 1;
    private const int SoReusePort = 15;

    private static readonly bool s_isLinux = RuntimeInformation.IsOSPlatform(OSPlatform.Linux);
    private static readonly bool s_isWindows = RuntimeInformation.IsOSPlatform(OSPlatform.Windows);

    /// <summary>Creates, configures, binds and starts listening; non-blocking. Throws (and closes the socket) on failure.</summary>
    internal static Socket CreateListener(EndPoint endPoint, ListenerOptions options)
    {
        if (options.ReusePort && !s_isLinux)
        {
            throw new PlatformNotSupportedException("SO_REUSEPORT with load balancing is supported on Linux only; set ListenerOptions.ReusePort = false, or use one acceptor (GroupAcceptMode.SingleAcceptor).");
        }

        ProtocolType protocol = endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified;
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, protocol);
        try
        {
            if (options.ReuseAddress && !s_isWindows && endPoint is IPEndPoint)
            {
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            }

            if (options.ReusePort)
            {
                SetReusePort(socket);
            }

            socket.Bind(endPoint);
            socket.Listen(options.Backlog);
            socket.Blocking = false;
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static void SetReusePort(Socket socket)
    {
#if NET5_0_OR_GREATER
        Span<byte> one = stackalloc byte[sizeof(int)];
        BitConverter.TryWriteBytes(one, 1);
        socket.SetRawSocketOption(SolSocket, SoReusePort, one);
#else
        int one = 1;
        if (setsockopt((int)socket.Handle, SolSocket, SoReusePort, ref one, sizeof(int)) != 0)
        {
            throw new InvalidOperationException("setsockopt(SO_REUSEPORT) failed with errno " + Marshal.GetLastWin32Error().ToString(System.Globalization.CultureInfo.InvariantCulture) + ".");
        }
#endif
    }

#if !NET5_0_OR_GREATER
    [DllImport("libc.so.6", EntryPoint = "setsockopt", SetLastError = true)]
    private static extern int setsockopt(int socket, int level, int optionName, ref int optionValue, uint optionLength);
#endif
}
