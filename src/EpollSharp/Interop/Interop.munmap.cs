using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>int munmap(void *addr, size_t length);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "munmap", SetLastError = true)]
        internal static partial int munmap(nint addr, nuint length);
#else
        [DllImport(Libraries.Libc, EntryPoint = "munmap", SetLastError = true)]
        internal static extern int munmap(nint addr, nuint length);
#endif
    }
}
