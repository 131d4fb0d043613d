#if NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// net8.0 and later wrap an accepted descriptor in a Socket, so the listener can accept with completions.
public sealed partial class ConnectionListener
{
    private static bool CanWrapDescriptors => true;

    /// <summary>A <see cref="Socket"/> that owns the accepted descriptor <paramref name="fd"/>; closes it if that fails.</summary>
    private static Socket WrapAccepted(int fd)
    {
        var handle = new SafeSocketHandle((IntPtr)fd, ownsHandle: true);
        try
        {
            return new Socket(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }
}
#endif
