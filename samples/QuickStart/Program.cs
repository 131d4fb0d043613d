// The README's example: an echo server on the public API. Try it with `nc 127.0.0.1 8080`; Ctrl+C stops it.
// An optional argument gives the port (0 picks a free one), so tests can run it.
using System.Net;
using EpollSharp;
using EpollSharp.Connections;

int port = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 8080;

#region quickstart
using var loop = new EventLoop();                 // epoll on Linux, kqueue on macOS/BSD, managed elsewhere
using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, port), new Echo());
Console.WriteLine($"listening on {listener.LocalEndPoint} backend={loop.Backend}");
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    loop.Stop();                                  // safe from any thread
};
loop.Run();                                       // every callback runs here, on this thread
Console.WriteLine($"stopped after {listener.AcceptedCount} connections");

sealed class Echo : ConnectionHandler
{
    // Called on the loop thread with data over a pooled buffer; Write sends now and buffers only the rest.
    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
}
#endregion
