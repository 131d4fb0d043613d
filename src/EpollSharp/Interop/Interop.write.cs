using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>ssize_t write(int fd, const void *buf, size_t count);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "write", SetLastError = true)]
        internal static unsafe partial nint write(int fd, void* buf, nuint count);
#else
        [DllImport(Libraries.Libc, EntryPoint = "write", SetLastError = true)]
        internal static extern unsafe nint write(int fd, void* buf, nuint count);
#endif
    }
}
