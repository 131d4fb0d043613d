#if !NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// netstandard2.0 has no way to wrap a descriptor in a Socket (no Socket(SafeSocketHandle)).
public static partial class SocketActivation
{
    private static void ThrowIfCannotWrap() =>
        throw new PlatformNotSupportedException("Socket activation needs the net8.0 or later build of EpollSharp: netstandard2.0 cannot wrap a descriptor in a Socket.");

    private static int CurrentProcessId() => System.Diagnostics.Process.GetCurrentProcess().Id;

    private static Socket Wrap(int fd) => throw new PlatformNotSupportedException("Socket activation needs the net8.0 or later build of EpollSharp.");
}
#endif
