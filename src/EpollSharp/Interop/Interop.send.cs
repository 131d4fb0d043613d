using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>MSG_NOSIGNAL</c> (Linux): a send to a peer that has gone fails with EPIPE instead of raising SIGPIPE.</summary>
        internal const int MSG_NOSIGNAL = 0x4000;

        /// <summary><c>ssize_t send(int sockfd, const void *buf, size_t len, int flags);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "send", SetLastError = true)]
        internal static unsafe partial nint send(int sockfd, void* buf, nuint len, int flags);
#else
        [DllImport(Libraries.Libc, EntryPoint = "send", SetLastError = true)]
        internal static extern unsafe nint send(int sockfd, void* buf, nuint len, int flags);
#endif
    }
}
