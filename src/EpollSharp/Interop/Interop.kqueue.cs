using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>
    /// kqueue and kevent, bound through <see cref="Libraries.Kqueue"/>. On .NET 7 and later that logical name binds only
    /// once the caller has installed a resolver for it (the kqueue backend does, before its first call): this layer
    /// declares the name and knows nothing of how it is found.
    /// </summary>
    internal static partial class Kqueue
    {
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
