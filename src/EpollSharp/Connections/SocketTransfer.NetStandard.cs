#if !NET5_0_OR_GREATER
using System;
using System.Net.Sockets;

namespace EpollSharp.Connections;

// The netstandard2.0 way: <see cref="Socket"/>'s array overloads (it has no span overloads).
internal readonly partial struct SocketTransfer
{
    /// <summary>The connection's socket; the connection owns it (and closes it).</summary>
    private readonly Socket _socket;

    /// <summary>
    /// A scratch array of the loop thread for sending spans (one per thread, kept, so a write neither allocates nor takes
    /// a second array from the pool while the receive buffer is out).
    /// </summary>
    [ThreadStatic]
    private static byte[]? t_sendScratch;

    /// <summary>The calls on <paramref name="socket"/>.</summary>
    internal SocketTransfer(Socket socket) => _socket = socket;

    /// <summary>
    /// One non-blocking send attempt; returns the bytes the kernel took (a short count means its buffer is full). The span
    /// is copied through <see cref="t_sendScratch"/> one chunk at a time.
    /// </summary>
    internal int Send(ReadOnlySpan<byte> data, out SocketError error)
    {
        byte[] buffer = t_sendScratch ??= new byte[SendQueue.ChunkSize];
        int total = 0;
        error = SocketError.Success;
        while (total < data.Length)
        {
            int count = Math.Min(buffer.Length, data.Length - total);
            data.Slice(total, count).CopyTo(buffer);
            int n = _socket.Send(buffer, 0, count, SocketFlags.None, out error);
            if (error != SocketError.Success)
            {
                break;
            }

            total += n;
            if (n < count)
            {
                break;
            }
        }

        return total;
    }

    /// <summary>One non-blocking send attempt of a backlog segment, straight from its array.</summary>
    internal int Send(ArraySegment<byte> segment, out SocketError error) =>
        _socket.Send(segment.Array!, segment.Offset, segment.Count, SocketFlags.None, out error);

    /// <summary>One non-blocking receive into <paramref name="target"/>: the bytes read, 0 at the end of stream, or 0 with an error.</summary>
    internal int Receive(ArraySegment<byte> target, out SocketError error) =>
        _socket.Receive(target.Array!, target.Offset, target.Count, SocketFlags.None, out error);
}
#endif
