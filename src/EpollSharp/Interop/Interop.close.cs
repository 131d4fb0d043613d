using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>int close(int fd);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "close", SetLastError = true)]
        internal static partial int close(int fd);
#else
        [DllImport(Libraries.Libc, EntryPoint = "close", SetLastError = true)]
        internal static extern int close(int fd);
#endif
    }
}
