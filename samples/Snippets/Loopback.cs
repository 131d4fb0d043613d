using System.Net;
using System.Net.Sockets;

namespace Snippets;

/// <summary>Connected TCP pairs on 127.0.0.1 for the snippets that need one socket and its peer.</summary>
internal static class Loopback
{
    /// <summary>Returns (server side, non-blocking; client side, blocking).</summary>
    public static (Socket Server, Socket Client) Pair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        Socket server = listener.Accept();
        server.Blocking = false;
        return (server, client);
    }
}
