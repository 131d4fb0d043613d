using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Sys
    {
        /// <summary><c>AT_FDCWD</c>: a relative path is resolved against the current directory.</summary>
        internal const int AT_FDCWD = -100;

        /// <summary><c>AT_SYMLINK_NOFOLLOW</c>: describe a symbolic link itself, not its target.</summary>
        internal const int AT_SYMLINK_NOFOLLOW = 0x100;

        /// <summary><c>STATX_TYPE | STATX_CTIME | STATX_INO | STATX_BTIME</c>: the fields the library asks for (the device numbers always come).</summary>
        internal const uint STATX_TYPE_CTIME_INO_BTIME = 0x1 | 0x80 | 0x100 | 0x800;

        /// <summary><c>STATX_BTIME</c> in <c>stx_mask</c>: the file system reported the birth time.</summary>
        internal const uint STATX_BTIME = 0x800;

        /// <summary>The size of <c>struct statx</c>, the same on every Linux architecture.</summary>
        internal const int StatxSize = 256;

        /// <summary>Offsets in <c>struct statx</c> (<c>&lt;linux/stat.h&gt;</c>), fixed across architectures.</summary>
        internal const int StatxMaskOffset = 0, StatxModeOffset = 28, StatxInoOffset = 32, StatxBtimeOffset = 80, StatxCtimeOffset = 96, StatxDevMajorOffset = 136, StatxDevMinorOffset = 140;

        /// <summary><c>S_IFMT</c> and <c>S_IFSOCK</c>: the file type bits of a mode, and the socket type.</summary>
        internal const int S_IFMT = 0xF000, S_IFSOCK = 0xC000;

        /// <summary>
        /// <c>int statx(int dirfd, const char *pathname, int flags, unsigned int mask, struct statx *statxbuf);</c>
        /// Linux only (glibc 2.28, musl 1.2.5). Used rather than <c>stat</c>, whose record differs by architecture and
        /// which older glibc does not export. <paramref name="pathname"/> is NUL-terminated UTF-8;
        /// <paramref name="statxbuf"/> holds <see cref="StatxSize"/> bytes.
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Libc, EntryPoint = "statx", SetLastError = true)]
        internal static unsafe partial int statx(int dirfd, byte* pathname, int flags, uint mask, byte* statxbuf);
#else
        [DllImport(Libraries.Libc, EntryPoint = "statx", SetLastError = true)]
        internal static extern unsafe int statx(int dirfd, byte* pathname, int flags, uint mask, byte* statxbuf);
#endif
    }
}
