namespace EpollSharp.Tests.Util;

/// <summary>
/// A connected TCP pair on 127.0.0.1: <see cref="Local"/> (the accepted socket, the one a test registers) and
/// <see cref="Peer"/> (blocking, the test's other end), both with Nagle off. The one socket-pair helper of the tests:
/// <see cref="Create"/> makes <see cref="Local"/> non-blocking, as the loop's users do; <see cref="CreateBlocking"/> leaves it
/// blocking, for the raw epoll tests that read it only once an event said it is ready.
/// </summary>
public sealed class SocketPair : IDisposable
{
    private SocketPair(Socket local, Socket peer)
    {
        Local = local;
        Peer = peer;
    }

    /// <summary>The accepted side: the socket a test registers.</summary>
    public Socket Local { get; }

    /// <summary>The connecting side, blocking: the test's other end.</summary>
    public Socket Peer { get; }

    /// <summary>The descriptor number of <see cref="Local"/>.</summary>
    public int LocalFd => (int)Local.SafeHandle.DangerousGetHandle();

    /// <summary>A pair whose <see cref="Local"/> is non-blocking.</summary>
    public static SocketPair Create() => Create(localBlocking: false);

    /// <summary>A pair whose <see cref="Local"/> is blocking, as <see cref="Socket.Accept"/> returns it.</summary>
    public static SocketPair CreateBlocking() => Create(localBlocking: true);

    private static SocketPair Create(bool localBlocking)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        peer.Connect(listener.LocalEndPoint!);
        Socket local = listener.Accept();
        local.Blocking = localBlocking;
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

    /// <summary>Disposes both sockets.</summary>
    public void Dispose()
    {
        Local.Dispose();
        Peer.Dispose();
    }
}
