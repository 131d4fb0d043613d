using System;
using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using EpollSharp.Connections;

namespace EpollSharp.Benchmarks;

/// <summary>
/// The connection layer's receive and send: one 64-byte send and the receive of it on a loopback pair, through
/// <see cref="Socket"/> (what the connection used before) and through the library's own <c>recv</c>/<c>send</c>
/// (<see cref="SocketIo"/>, what it uses on Linux). Both make the same two system calls; the difference is the managed
/// path around them.
/// </summary>
public class SocketIoBenchmarks
{
    private readonly byte[] _message = new byte[64];
    private readonly byte[] _buffer = new byte[16 * 1024];
    private Socket _sender = null!;
    private Socket _receiver = null!;

    [GlobalSetup]
    public void Setup()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _sender = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        _sender.Connect(listener.LocalEndPoint!);
        _receiver = listener.Accept();
        _sender.Blocking = false;
        _receiver.Blocking = false;
        if (!SocketIo.IsSupported)
        {
            throw new PlatformNotSupportedException("SocketIo is used on Linux only.");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _sender.Dispose();
        _receiver.Dispose();
    }

    [Benchmark(Baseline = true, Description = "Socket.Send + Socket.Receive, 64 B")]
    public int ThroughSocket()
    {
        _sender.Send(_message, SocketFlags.None, out SocketError _);
        return _receiver.Receive(_buffer, 0, _buffer.Length, SocketFlags.None, out SocketError _);
    }

    [Benchmark(Description = "SocketIo.Send + SocketIo.Receive (recv/send P/Invoke), 64 B")]
    public int ThroughSocketIo()
    {
        SocketIo.Send(_sender.SafeHandle, _message, out SocketError _);
        return SocketIo.Receive(_receiver.SafeHandle, _buffer, out SocketError _);
    }
}
