#if !NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// netstandard2.0 cannot wrap a descriptor in a Socket: its listeners accept through readiness on every backend.
public sealed partial class ConnectionListener
{
    private static bool CanWrapDescriptors => false;

    private static Socket WrapAccepted(int fd)
    {
        Interop.Sys.close(fd);
        throw new PlatformNotSupportedException("Wrapping a descriptor in a Socket needs the net8.0 or later build.");
    }
}
#endif
