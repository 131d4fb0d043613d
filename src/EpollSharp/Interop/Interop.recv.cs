using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>ssize_t recv(int sockfd, void *buf, size_t len, int flags);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "recv", SetLastError = true)]
        internal static unsafe partial nint recv(int sockfd, void* buf, nuint len, int flags);
#else
        [DllImport(Libraries.Libc, EntryPoint = "recv", SetLastError = true)]
        internal static extern unsafe nint recv(int sockfd, void* buf, nuint len, int flags);
#endif
    }
}
