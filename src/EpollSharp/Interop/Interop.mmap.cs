using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary>
        /// <c>void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);</c> Returns
        /// <c>MAP_FAILED</c> (-1) with errno set on failure. <c>off_t</c> is 64-bit on the 64-bit ABIs the library runs on.
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "mmap", SetLastError = true)]
        internal static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);
#else
        [DllImport(Libraries.Libc, EntryPoint = "mmap", SetLastError = true)]
        internal static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);
#endif
    }
}
