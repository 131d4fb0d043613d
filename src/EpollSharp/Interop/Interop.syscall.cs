using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary>
        /// <c>long syscall(long number, ...);</c> declared with six fixed word-sized arguments, for the system calls that
        /// the C library does not wrap (io_uring). Calling the variadic function this way is sound on the Linux ABIs the
        /// library runs on: on x86-64 the integer arguments travel in the same registers either way (and glibc's and
        /// musl's <c>syscall</c> never read <c>%al</c>, the vector-register count of a variadic call), and on arm64 Linux
        /// variadic arguments are passed like fixed ones. Unused arguments are 0. Returns -1 with errno set on failure.
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
        internal static partial nint syscall(nint number, nint arg1, nint arg2, nint arg3, nint arg4, nint arg5, nint arg6);
#else
        [DllImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
        internal static extern nint syscall(nint number, nint arg1, nint arg2, nint arg3, nint arg4, nint arg5, nint arg6);
#endif
    }
}
