using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        internal const int AF_UNIX = 1;
        internal const int SOCK_STREAM = 1;

        /// <summary><c>SOCK_CLOEXEC</c> on Linux (the value of <c>O_CLOEXEC</c>).</summary>
        internal const int SOCK_CLOEXEC = 0x80000;

        /// <summary><c>SOCK_NONBLOCK</c> on Linux (the value of <c>O_NONBLOCK</c>).</summary>
        internal const int SOCK_NONBLOCK = 0x800;

        /// <summary><c>int socketpair(int domain, int type, int protocol, int sv[2]);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "socketpair", SetLastError = true)]
        internal static unsafe partial int socketpair(int domain, int type, int protocol, int* sv);
#else
        [DllImport(Libraries.Libc, EntryPoint = "socketpair", SetLastError = true)]
        internal static extern unsafe int socketpair(int domain, int type, int protocol, int* sv);
#endif
    }
}
