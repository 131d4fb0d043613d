using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>int chmod(const char *pathname, mode_t mode);</c> <paramref name="pathname"/> is NUL-terminated UTF-8.</summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "chmod", SetLastError = true)]
        internal static unsafe partial int chmod(byte* pathname, uint mode);
#else
        [DllImport(Libraries.Libc, EntryPoint = "chmod", SetLastError = true)]
        internal static extern unsafe int chmod(byte* pathname, uint mode);
#endif
    }
}
