using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        internal const int EPOLL_CTL_ADD = 1;
        internal const int EPOLL_CTL_DEL = 2;
        internal const int EPOLL_CTL_MOD = 3;

        /// <summary>
        /// <c>int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);</c>
        /// <paramref name="ev"/> points at a <see cref="Native.EpollEventLayout"/>-shaped native struct.
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "epoll_ctl", SetLastError = true)]
        internal static unsafe partial int epoll_ctl(int epfd, int op, int fd, void* ev);
#else
        [DllImport(Libraries.Libc, EntryPoint = "epoll_ctl", SetLastError = true)]
        internal static extern unsafe int epoll_ctl(int epfd, int op, int fd, void* ev);
#endif
    }
}
