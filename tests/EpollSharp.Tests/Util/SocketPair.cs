using System;
using System.Net;
using System.Net.Sockets;

namespace EpollSharp.Tests.Util;

/// <summary>A connected TCP pair on 127.0.0.1: <see cref="Local"/> (non-blocking, to register) and <see cref="Peer"/> (blocking, the test's other end).</summary>
public sealed class SocketPair : IDisposable
{
    private SocketPair(Socket local, Socket peer)
    {
        Local = local;
        Peer = peer;
    }

    public Socket Local { get; }

    public Socket Peer { get; }

    public static SocketPair Create()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        peer.Connect(listener.LocalEndPoint!);
        Socket local = listener.Accept();
        local.Blocking = false;
        local.NoDelay = true;
        return new SocketPair(local, peer);
    }

    /// <summary>Reads everything <see cref="Local"/> has now, without blocking; returns the byte count (0 when none, -1 at end of stream).</summary>
    public int Drain()
    {
        var buffer = new byte[65536];
        int total = 0;
        while (true)
        {
            int n = Local.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock)
            {
                return total;
            }

            if (error != SocketError.Success)
            {
                throw new SocketException((int)error);
            }

            if (n == 0)
            {
                return total == 0 ? -1 : total;
            }

            total += n;
        }
    }

    /// <summary>Resets the peer's side (RST): the local side then sees an error and a hang-up.</summary>
    public void ResetPeer()
    {
        Peer.LingerState = new LingerOption(true, 0);
        Peer.Close();
    }

    public void Dispose()
    {
        Local.Dispose();
        Peer.Dispose();
    }
}
