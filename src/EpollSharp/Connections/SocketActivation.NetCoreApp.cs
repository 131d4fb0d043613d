#if NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// The net8.0-and-later way to wrap a descriptor: Socket(SafeSocketHandle).
public static partial class SocketActivation
{
    private static void ThrowIfCannotWrap()
    {
    }

    private static int CurrentProcessId() => Environment.ProcessId;

    /// <summary>A <see cref="Socket"/> that owns descriptor <paramref name="fd"/>; .NET reads its family, type and protocol from the kernel.</summary>
    private static Socket Wrap(int fd)
    {
        var handle = new SafeSocketHandle((IntPtr)fd, ownsHandle: true);
        try
        {
            var socket = new Socket(handle);

            // .NET wraps any descriptor; SO_TYPE fails with ENOTSOCK on one that is not a socket (a FIFO, a file).
            Span<byte> type = stackalloc byte[sizeof(int)];
            socket.GetRawSocketOption(Interop.SocketOptions.SOL_SOCKET, Interop.SocketOptions.SO_TYPE, type);
            return socket;
        }
        catch
        {
            // Not a socket: the descriptor stays open, as it was passed; only the wrapper goes.
            handle.SetHandleAsInvalid();
            handle.Dispose();
            throw;
        }
    }
}
#endif
