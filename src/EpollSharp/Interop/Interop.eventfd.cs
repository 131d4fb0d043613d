using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        internal const int EFD_SEMAPHORE = 0x1;
        /// <summary><c>EFD_NONBLOCK</c> = <c>O_NONBLOCK</c> on x86, x86-64, arm and arm64.</summary>
        internal const int EFD_NONBLOCK = 0x800;
        /// <summary><c>EFD_CLOEXEC</c> = <c>O_CLOEXEC</c> on x86, x86-64, arm and arm64.</summary>
        internal const int EFD_CLOEXEC = 0x80000;

        /// <summary><c>int eventfd(unsigned int initval, int flags);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "eventfd", SetLastError = true)]
        internal static partial int eventfd(uint initval, int flags);
#else
        [DllImport(Libraries.Libc, EntryPoint = "eventfd", SetLastError = true)]
        internal static extern int eventfd(uint initval, int flags);
#endif
    }
}
