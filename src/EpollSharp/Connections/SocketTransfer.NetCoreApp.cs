#if NET5_0_OR_GREATER
using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Connections;

// The net8.0-and-later way: <c>recv</c>/<c>send</c> through <see cref="SocketIo"/> on Linux, <see cref="Socket"/>'s span overloads elsewhere.
internal readonly partial struct SocketTransfer
{
    /// <summary>The connection's socket; the connection owns it (and closes it).</summary>
    private readonly Socket _socket;

    /// <summary>The socket's handle when receives and sends go straight to <c>recv</c>/<c>send</c> (Linux); otherwise null and they go through <see cref="Socket"/>.</summary>
    private readonly SafeHandle? _directHandle;

    /// <summary>The calls on <paramref name="socket"/>: direct ones where <see cref="SocketIo.IsSupported"/>.</summary>
    internal SocketTransfer(Socket socket)
    {
        _socket = socket;
        _directHandle = SocketIo.IsSupported ? socket.SafeHandle : null;
    }

    /// <summary>One non-blocking send attempt; returns the bytes the kernel took (a short count means its buffer is full).</summary>
    internal int Send(ReadOnlySpan<byte> data, out SocketError error) =>
        _directHandle is not null
            ? SocketIo.Send(_directHandle, data, out error)
            : _socket.Send(data, SocketFlags.None, out error);

    /// <summary>One non-blocking send attempt of a backlog segment; as <see cref="Send(ReadOnlySpan{byte}, out SocketError)"/>.</summary>
    internal int Send(ArraySegment<byte> segment, out SocketError error) => Send((ReadOnlySpan<byte>)segment, out error);

    /// <summary>One non-blocking receive into <paramref name="target"/>: the bytes read, 0 at the end of stream, or 0 with an error.</summary>
    internal int Receive(ArraySegment<byte> target, out SocketError error) =>
        _directHandle is not null
            ? SocketIo.Receive(_directHandle, target.AsSpan(), out error)
            : _socket.Receive(target.Array!, target.Offset, target.Count, SocketFlags.None, out error);
}
#endif
