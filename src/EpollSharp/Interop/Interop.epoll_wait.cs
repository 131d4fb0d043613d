using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "epoll_wait", SetLastError = true)]
        internal static unsafe partial int epoll_wait(int epfd, void* events, int maxevents, int timeout);
#else
        [DllImport(Libraries.Libc, EntryPoint = "epoll_wait", SetLastError = true)]
        internal static extern unsafe int epoll_wait(int epfd, void* events, int maxevents, int timeout);
#endif
    }
}
