namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>
    /// The socket errno values of macOS and FreeBSD, where they differ from Linux's (<see cref="Errno"/>). Both systems
    /// inherited them from 4.4BSD and agree on every value here. A kqueue event on those systems carries one of them in
    /// <c>fflags</c> (with <c>EV_EOF</c>); over libkqueue on Linux the value there is a Linux errno.
    /// </summary>
    internal static class ErrnoBsd
    {
        internal const int EPIPE = 32;
        internal const int EAGAIN = 35;
        internal const int ENOTSOCK = 38;
        internal const int EMSGSIZE = 40;
        internal const int ENETDOWN = 50;
        internal const int ENETUNREACH = 51;
        internal const int ENETRESET = 52;
        internal const int ECONNABORTED = 53;
        internal const int ECONNRESET = 54;
        internal const int ENOBUFS = 55;
        internal const int ENOTCONN = 57;
        internal const int ESHUTDOWN = 58;
        internal const int ETIMEDOUT = 60;
        internal const int ECONNREFUSED = 61;
        internal const int EHOSTDOWN = 64;
        internal const int EHOSTUNREACH = 65;
    }
}
