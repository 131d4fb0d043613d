using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp;

/// <summary>Gets the <see cref="SafeHandle"/> of a <see cref="Socket"/> on every target framework.</summary>
internal static class SocketHandles
{
#if !NET5_0_OR_GREATER
    // netstandard2.0 has no Socket.SafeHandle in its reference surface, but every runtime that runs this build on
    // Linux or macOS (.NET Core 3.0 and later) has it. Look it up once.
    private static readonly System.Reflection.PropertyInfo? s_safeHandle = typeof(Socket).GetProperty("SafeHandle");
#endif

    /// <summary>The socket's handle, or null when the socket was disposed.</summary>
    internal static SafeHandle? TryGetSafeHandle(Socket socket)
    {
        try
        {
#if NET5_0_OR_GREATER
            return socket.SafeHandle;
#else
            if (s_safeHandle is not null)
            {
                return (SafeHandle?)s_safeHandle.GetValue(socket);
            }

            // An old runtime without Socket.SafeHandle: a non-owning handle. The registration then cannot keep the
            // descriptor open, so dispose the registration before the socket (documented on EventLoop.Register).
            return new BorrowedHandle(socket.Handle);
#endif
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
#if !NET5_0_OR_GREATER
        catch (System.Reflection.TargetInvocationException e) when (e.InnerException is ObjectDisposedException)
        {
            return null;
        }
#endif
    }

#if !NET5_0_OR_GREATER
    private sealed class BorrowedHandle : SafeHandle
    {
        public BorrowedHandle(IntPtr value)
            : base(new IntPtr(-1), ownsHandle: false)
        {
            SetHandle(value);
        }

        public override bool IsInvalid => (long)handle < 0;

        protected override bool ReleaseHandle() => true;
    }
#endif
}
