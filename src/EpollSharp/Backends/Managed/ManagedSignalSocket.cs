using System;
using System.Net;
using System.Net.Sockets;

namespace EpollSharp.Backends;

/// <summary>
/// A connected loopback TCP pair that makes a <see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, int)"/>
/// return: <see cref="Signal"/> writes one byte to the sending end, which makes <see cref="Receiver"/> readable until
/// <see cref="Drain"/> reads it. Select can only be woken by a socket, so this is how the managed backend wakes itself.
/// </summary>
/// <remarks>
/// Both ends are non-blocking and the sending end has Nagle's algorithm off, so a second signal is never held back
/// waiting for the first one's acknowledgement. Coalescing (one byte outstanding at a time) is the caller's job.
/// Neither <see cref="Signal"/> nor <see cref="Drain"/> allocates.
/// </remarks>
internal sealed class ManagedSignalSocket : IDisposable
{
    private readonly Socket _sender;
    private readonly byte[] _one = { 1 };
    private readonly byte[] _sink = new byte[64];

    private ManagedSignalSocket(Socket receiver, Socket sender)
    {
        Receiver = receiver;
        _sender = sender;
    }

    /// <summary>The end to put in a Select read list: readable while a signal is pending.</summary>
    public Socket Receiver { get; }

    /// <summary>Creates a pair on the IPv4 loopback address, or on the IPv6 one when the host has no IPv4 loopback.</summary>
    /// <exception cref="SocketException">No loopback pair could be made.</exception>
    public static ManagedSignalSocket Create()
    {
        try
        {
            return Create(IPAddress.Loopback);
        }
        catch (SocketException)
        {
            return Create(IPAddress.IPv6Loopback);
        }
    }

    /// <summary>Makes the receiver readable (if it is not already). Thread-safe.</summary>
    /// <exception cref="ObjectDisposedException">The pair was disposed.</exception>
    public void Signal()
    {
        // WouldBlock would mean the send buffer holds bytes already, so the receiver is readable anyway; any other
        // error (the pair torn down) leaves nothing to wake.
        _sender.Send(_one, 0, 1, SocketFlags.None, out _);
    }

    /// <summary>Reads every pending byte, so the receiver is no longer readable. Call from one thread at a time.</summary>
    public void Drain()
    {
        while (true)
        {
            int n = Receiver.Receive(_sink, 0, _sink.Length, SocketFlags.None, out SocketError error);
            if (error != SocketError.Success || n < _sink.Length)
            {
                return;
            }
        }
    }

    /// <summary>Closes both ends.</summary>
    public void Dispose()
    {
        _sender.Dispose();
        Receiver.Dispose();
    }

    private static ManagedSignalSocket Create(IPAddress loopback)
    {
        // The listener lives only for the connect; a stranger that connects to it in that window is refused by
        // checking that the accepted connection's peer is our own sending end.
        for (int attempt = 0; ; attempt++)
        {
            using var listener = new Socket(loopback.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(loopback, 0));
            listener.Listen(4);
            var sender = new Socket(loopback.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            Socket? receiver = null;
            try
            {
                sender.NoDelay = true;
                sender.Connect(listener.LocalEndPoint!);
                receiver = listener.Accept();
                if (!Equals(receiver.RemoteEndPoint, sender.LocalEndPoint))
                {
                    if (attempt < 3)
                    {
                        receiver.Dispose();
                        sender.Dispose();
                        continue;
                    }

                    throw new SocketException((int)SocketError.ConnectionRefused);
                }

                receiver.Blocking = false;
                sender.Blocking = false;
                return new ManagedSignalSocket(receiver, sender);
            }
            catch
            {
                receiver?.Dispose();
                sender.Dispose();
                throw;
            }
        }
    }
}
