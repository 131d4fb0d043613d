#if !NET5_0_OR_GREATER
using System;
using System.Net.Sockets;
using EpollSharp.Native;

namespace EpollSharp.Connections;

// The netstandard2.0 way to set a raw option: setsockopt through the library's own import (no SetRawSocketOption there).
internal static partial class SocketSetup
{
    /// <summary>Sets a boolean <c>SOL_SOCKET</c> option to 1 through the raw option call (no .NET mapping in between).</summary>
    private static void SetFlag(Socket socket, int option)
    {
        if (!Platform.IsLinux)
        {
            // This build binds the C library of Linux only; elsewhere .NET's mapping is the one way to set the option.
            if (option == SocketConstants.SoReuseAddr)
            {
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                return;
            }

            throw new PlatformNotSupportedException("Raw socket options need Linux in the netstandard2.0 build.");
        }

        int one = 1;
        unsafe
        {
            if (Interop.Sys.setsockopt((int)socket.Handle, SocketConstants.SolSocket, option, &one, sizeof(int)) != 0)
            {
                int errno = Interop.Errno.Last();
                throw new InvalidOperationException("setsockopt(SOL_SOCKET, " + option.ToString(System.Globalization.CultureInfo.InvariantCulture) + ") failed: " + ErrnoNames.NameOf(errno) + ".");
            }
        }
    }
}
#endif
