namespace EpollSharp;

/// <summary>
/// The native interop layer: one native function per file, named as in C. It knows nothing of the
/// event loop. Every declaration is a source-generated <c>LibraryImport</c> on .NET 7 and later and a
/// <c>DllImport</c> on netstandard2.0; that <c>#if</c> lives in these files only.
/// </summary>
internal static partial class Interop
{
    /// <summary>The library names, in one place.</summary>
    internal static class Libraries
    {
        /// <summary>
        /// glibc and musl export epoll, eventfd and the POSIX calls from the C library. The versioned
        /// name is used because the unversioned <c>libc.so</c> is a linker script on glibc systems.
        /// </summary>
        internal const string Libc = "libc.so.6";

#if NET7_0_OR_GREATER
        /// <summary>
        /// The library that exports <c>kqueue</c> and <c>kevent</c>: a logical name that no file has. The kqueue backend
        /// installs a <c>DllImport</c> resolver on this assembly before its first call, which maps the name to the C
        /// library on macOS (<c>/usr/lib/libSystem.B.dylib</c>) and FreeBSD (<c>libc.so.7</c>), or to the library that
        /// <c>EPOLLSHARP_KQUEUE_LIBRARY</c> names (libkqueue on Linux). This layer does not depend on the backends: they
        /// depend on it.
        /// </summary>
        internal const string Kqueue = "EpollSharp.Kqueue";
#else
        /// <summary>
        /// The library that exports <c>kqueue</c> and <c>kevent</c>. netstandard2.0 has no <c>NativeLibrary</c>, so
        /// no resolver: "libc", which the .NET runtime maps to the system C library on macOS and FreeBSD.
        /// <c>EPOLLSHARP_KQUEUE_LIBRARY</c> is not supported by this build.
        /// </summary>
        internal const string Kqueue = "libc";
#endif
    }
}
