namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>
    /// Socket-option levels and names, as numbers: the library sets some options raw (<c>SetRawSocketOption</c>), where
    /// .NET's own mapping would set more than asked (its <c>ReuseAddress</c> also sets <c>SO_REUSEPORT</c> on Unix) or has no
    /// name for them (<c>TCP_INFO</c>, and the keep-alive timings on netstandard2.0); the tests read options back raw with them. Linux values (<c>&lt;asm-generic/socket.h&gt;</c>, <c>&lt;netinet/tcp.h&gt;</c>),
    /// identical on x86-64 and arm64; <see cref="Bsd"/> has those of macOS and FreeBSD.
    /// </summary>
    internal static class SocketOptions
    {
        internal const int SOL_SOCKET = 1;
        internal const int SO_REUSEADDR = 2;
        internal const int SO_REUSEPORT = 15;
        internal const int SO_SNDBUF = 7;
        internal const int SO_RCVBUF = 8;
        internal const int SO_KEEPALIVE = 9;
        internal const int SO_LINGER = 13;
        internal const int SO_TYPE = 3;
        internal const int IPPROTO_TCP = 6;
        internal const int TCP_INFO = 11;

        /// <summary>The keep-alive timings, set raw by the netstandard2.0 build (later builds use .NET's <c>SocketOptionName.TcpKeepAlive...</c>).</summary>
        internal const int TCP_KEEPIDLE = 4;
        internal const int TCP_KEEPINTVL = 5;
        internal const int TCP_KEEPCNT = 6;

        /// <summary>Offset of <c>__u64 tcpi_bytes_received</c> in <c>struct tcp_info</c> (since Linux 4.1; the struct only grows at its end).</summary>
        internal const int TcpInfoBytesReceivedOffset = 128;

        /// <summary>macOS and FreeBSD values (<c>&lt;sys/socket.h&gt;</c>).</summary>
        internal static class Bsd
        {
            internal const int SOL_SOCKET = 0xffff;
            internal const int SO_REUSEADDR = 0x0004;
            internal const int SO_REUSEPORT = 0x0200;
        }
    }
}
