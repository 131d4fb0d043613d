using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>errno values the library acts on. Linux values (identical on x86-64 and arm64).</summary>
    internal static class Errno
    {
        internal const int EPERM = 1;
        internal const int ENOENT = 2;
        internal const int EINTR = 4;
        internal const int EBADF = 9;
        internal const int EAGAIN = 11;
        internal const int ENOMEM = 12;
        internal const int EACCES = 13;
        internal const int EFAULT = 14;
        internal const int EBUSY = 16;
        internal const int EEXIST = 17;
        internal const int EINVAL = 22;
        internal const int ENFILE = 23;
        internal const int EMFILE = 24;
        internal const int ENOSPC = 28;
        internal const int ENOSYS = 38;
        internal const int EPIPE = 32;
        internal const int ELOOP = 40;
        internal const int ETIME = 62;
        internal const int ENOTSOCK = 88;
        internal const int EMSGSIZE = 90;
        internal const int EOPNOTSUPP = 95;
        internal const int ENETDOWN = 100;
        internal const int ENETUNREACH = 101;
        internal const int ENETRESET = 102;
        internal const int ECONNABORTED = 103;
        internal const int ECONNRESET = 104;
        internal const int ENOBUFS = 105;
        internal const int ENOTCONN = 107;
        internal const int ESHUTDOWN = 108;
        internal const int ETIMEDOUT = 110;
        internal const int ECONNREFUSED = 111;
        internal const int EHOSTDOWN = 112;
        internal const int EHOSTUNREACH = 113;
        internal const int ECANCELED = 125;

        /// <summary>Reads errno as the marshaller captured it right after the call.</summary>
        internal static int Last()
        {
#if NET7_0_OR_GREATER
            return Marshal.GetLastPInvokeError();
#else
            return Marshal.GetLastWin32Error();
#endif
        }
    }
}
