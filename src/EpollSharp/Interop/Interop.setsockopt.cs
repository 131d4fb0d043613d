using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
#if !NET5_0_OR_GREATER
        /// <summary>
        /// <c>int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);</c> For the
        /// netstandard2.0 build only, which lacks <c>Socket.SetRawSocketOption</c>; later builds set raw options through it.
        /// </summary>
        [DllImport(Libraries.Libc, EntryPoint = "setsockopt", SetLastError = true)]
        internal static extern unsafe int setsockopt(int sockfd, int level, int optname, void* optval, uint optlen);
#endif
    }
}
