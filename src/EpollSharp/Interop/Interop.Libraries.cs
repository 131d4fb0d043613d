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
    }
}
