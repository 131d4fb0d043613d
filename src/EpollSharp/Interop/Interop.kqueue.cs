using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>
    /// kqueue and kevent, bound through <see cref="Libraries.Kqueue"/>. On .NET 7 and later the static constructor
    /// installs the resolver that maps that logical name to a real library, before the first call can bind.
    /// </summary>
    internal static partial class Kqueue
    {
#if NET7_0_OR_GREATER
        static Kqueue() => Backends.KqueueLibrary.InstallResolver();
#endif

        /// <summary><c>int kqueue(void);</c></summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Kqueue, EntryPoint = "kqueue", SetLastError = true)]
        internal static partial int kqueue();
#else
        [DllImport(Libraries.Kqueue, EntryPoint = "kqueue", SetLastError = true)]
        internal static extern int kqueue();
#endif
    }
}
