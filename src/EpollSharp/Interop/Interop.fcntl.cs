using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>F_GETFD</c> and <c>F_SETFD</c>: read and set a descriptor's flags.</summary>
        internal const int F_GETFD = 1, F_SETFD = 2;

        /// <summary><c>FD_CLOEXEC</c>: the descriptor is closed across <c>execve</c>.</summary>
        internal const int FD_CLOEXEC = 1;

        /// <summary>
        /// <c>int fcntl(int fd, int cmd, ...);</c> with one <c>int</c> argument, for <see cref="F_GETFD"/> and <see cref="F_SETFD"/>.
        /// The C function is variadic; an <c>int</c> passed as a fixed argument is passed the same way on Linux's x86-64 and
        /// arm64 calling conventions (not on Apple's arm64, where this import is never used).
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "fcntl", SetLastError = true)]
        internal static partial int fcntl(int fd, int cmd, int arg);
#else
        [DllImport(Libraries.Libc, EntryPoint = "fcntl", SetLastError = true)]
        internal static extern int fcntl(int fd, int cmd, int arg);
#endif
    }
}
