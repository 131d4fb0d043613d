using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>EPOLL_CLOEXEC</c>: equal to <c>O_CLOEXEC</c> on x86, x86-64, arm and arm64.</summary>
        internal const int EPOLL_CLOEXEC = 0x80000;

        /// <summary><c>int epoll_create1(int flags);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "epoll_create1", SetLastError = true)]
        internal static partial int epoll_create1(int flags);
#else
        [DllImport(Libraries.Libc, EntryPoint = "epoll_create1", SetLastError = true)]
        internal static extern int epoll_create1(int flags);
#endif
    }
}
