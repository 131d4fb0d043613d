using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>
/// The arrival counter of edge mode: how many bytes ever arrived on a connection, so that new data can be told from old data
/// of the same size. On Linux TCP it is <c>tcpi_bytes_received</c> of <c>TCP_INFO</c>; elsewhere there is none (-1), and edge
/// mode falls back on the receive queue's byte count.
/// </summary>
/// <remarks>
/// <b>Owner and rule.</b> Used only by the thread in <see cref="ManagedBackend.Wait"/>: by the scan (edge entries that are
/// readable) and by the blocking wait (its re-reads of stale edge entries while it sleeps). It owns its scratch buffer and writes
/// only the entry's <see cref="ManagedEntry.ArrivalCounter"/> and <see cref="ManagedEntry.Dead"/>, which are that thread's. No lock.
/// </remarks>
internal sealed class ManagedArrivalCounter
{
    /// <summary>Linux: <c>IPPROTO_TCP</c>.</summary>
    internal const int TcpLevel = Interop.SocketOptions.IPPROTO_TCP;

    /// <summary>Linux: <c>TCP_INFO</c>.</summary>
    internal const int TcpInfoOption = Interop.SocketOptions.TCP_INFO;

    /// <summary>Linux: offset of <c>tcpi_bytes_received</c> in <c>struct tcp_info</c>.</summary>
    internal const int TcpInfoBytesReceivedOffset = Interop.SocketOptions.TcpInfoBytesReceivedOffset;

    /// <summary>Room for <c>struct tcp_info</c> of current kernels (the kernel copies at most this much).</summary>
    private const int TcpInfoLength = 512;

    private readonly byte[] _tcpInfo = new byte[TcpInfoLength];

    /// <summary>
    /// The number of bytes that ever arrived on a Linux TCP connection (<c>tcpi_bytes_received</c> of <c>TCP_INFO</c>, read with
    /// the managed <c>Socket.GetRawSocketOption</c>); -1 where there is no such counter (other systems, Unix sockets,
    /// kernels before 4.1, the netstandard2.0 build). Asked once per registration whether it works.
    /// </summary>
    /// <param name="e">The entry.</param>
    /// <param name="socket">Which of its sockets to ask: the registered one in a scan, the poller while the loop sleeps.</param>
    public long Read(ManagedEntry e, Socket socket)
    {
        if (e.ArrivalCounter < 0 || !e.IsStream)
        {
            return -1;
        }

        if (e.ArrivalCounter == 0 && !(EpollSharp.Native.Platform.IsLinux && ManagedSocketApi.CanReadRawOption))
        {
            e.ArrivalCounter = -1;
            return -1;
        }

        try
        {
            int length = ManagedSocketApi.GetRawOption(socket, TcpLevel, TcpInfoOption, _tcpInfo);
            if (length < TcpInfoBytesReceivedOffset + sizeof(long))
            {
                e.ArrivalCounter = -1;
                return -1;
            }

            e.ArrivalCounter = 1;
            return MemoryMarshal.Read<long>(_tcpInfo.AsSpan(TcpInfoBytesReceivedOffset));
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return -1;
        }
        catch (SocketException)
        {
            e.ArrivalCounter = -1;
            return -1;
        }
    }
}
