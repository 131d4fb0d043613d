#if NET5_0_OR_GREATER
using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using EpollSharp.Native;
using E = EpollSharp.Interop.Errno;

namespace EpollSharp.Connections;

/// <summary>
/// Non-blocking <c>recv</c>/<c>send</c> straight on a socket's descriptor (Linux), for the connection layer's hot path:
/// one P/Invoke per call instead of <see cref="Socket.Receive(Span{byte}, SocketFlags, out SocketError)"/>'s way through
/// <c>SocketPal</c> and <c>libSystem.Native</c>. Errors come back as the same <see cref="SocketError"/> values
/// <see cref="Socket"/> reports for them, so callers see no difference. The handle is referenced for the length of each
/// call, so a socket closed meanwhile gives <see cref="ObjectDisposedException"/>, never a read from a reused descriptor.
/// A helper of the connection layer (the P/Invoke declarations themselves are in <c>Interop/Interop.recv.cs</c> and
/// <c>Interop/Interop.send.cs</c>); the connection uses it from <c>Connection.Io.NetCoreApp.cs</c>.
/// </summary>
internal static class SocketIo
{
    /// <summary>Whether this process uses the direct calls: on Linux, where the binding and errno values are known.</summary>
    internal static readonly bool IsSupported = Platform.IsLinux;

    /// <summary>One <c>recv</c> into <paramref name="buffer"/>, retried on EINTR. Returns the bytes read (0: end of stream), or 0 with an error.</summary>
    internal static unsafe int Receive(SafeHandle handle, Span<byte> buffer, out SocketError error)
    {
        fixed (byte* p = buffer)
        {
            return Transfer(handle, p, buffer.Length, send: false, out error);
        }
    }

    /// <summary>One <c>send</c> (with MSG_NOSIGNAL) of <paramref name="data"/>, retried on EINTR. Returns the bytes the kernel took, or 0 with an error.</summary>
    internal static unsafe int Send(SafeHandle handle, ReadOnlySpan<byte> data, out SocketError error)
    {
        fixed (byte* p = data)
        {
            return Transfer(handle, p, data.Length, send: true, out error);
        }
    }

    private static unsafe int Transfer(SafeHandle handle, byte* p, int length, bool send, out SocketError error)
    {
        using SafeHandleLease lease = SafeHandleLease.Acquire(handle);
        int fd = (int)handle.DangerousGetHandle();
        while (true)
        {
            nint n = send
                ? Interop.Sys.send(fd, p, (nuint)length, Interop.Sys.MSG_NOSIGNAL)
                : Interop.Sys.recv(fd, p, (nuint)length, 0);
            if (n >= 0)
            {
                error = SocketError.Success;
                return (int)n;
            }

            int errno = E.Last();
            if (errno != E.EINTR)
            {
                error = ToSocketError(errno);
                return 0;
            }
        }
    }

    /// <summary>
    /// The <see cref="SocketError"/> that <see cref="Socket"/> reports for a Linux errno from <c>recv</c> or <c>send</c>;
    /// <see cref="SocketError.SocketError"/> for one it has no name for. The table is <see cref="SocketErrors.FromLinuxErrno"/>.
    /// </summary>
    internal static SocketError ToSocketError(int errno) => SocketErrors.FromLinuxErrno(errno);
}
#endif
