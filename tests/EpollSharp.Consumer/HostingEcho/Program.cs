using System;
using System.Net;
using System.Net.Sockets;
using System.Text;
using EpollSharp.Connections;
using EpollSharp.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

// The consumer app: a host with an EpollSharp server bound from the command line, one echo, a graceful stop; exit code 0
// when the bytes came back intact and the host stopped.
HostApplicationBuilder builder = Host.CreateApplicationBuilder(new[] { "--EpollSharp:Endpoints:0=127.0.0.1:0", "--EpollSharp:Loops=2" });
builder.Logging.ClearProviders();
builder.Services.AddEpollSharpServer<Echo>(builder.Configuration.GetSection(EpollSharpServerOptions.SectionName));
using IHost host = builder.Build();
host.Start();

EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
var endPoint = (IPEndPoint)server.LocalEndPoints[0];
byte[] message = Encoding.ASCII.GetBytes("hello from the hosting consumer");
var reply = new byte[message.Length];
using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 })
{
    client.Connect(endPoint);
    client.Send(message);
    int read = 0;
    while (read < reply.Length)
    {
        int n = client.Receive(reply, read, reply.Length - read, SocketFlags.None);
        if (n == 0)
        {
            break;
        }

        read += n;
    }
}

host.StopAsync().GetAwaiter().GetResult();
bool ok = reply.AsSpan().SequenceEqual(message) && server.Group.Completion.IsCompletedSuccessfully;
Console.WriteLine($"HostingEcho: {(ok ? "echoed" : "FAILED to echo")} {message.Length} bytes on {endPoint} through EpollSharp.Hosting, {server.Group.Loops.Count} loops, backend {server.Group.Backend}");
return ok ? 0 : 1;

internal sealed class Echo : ConnectionHandler
{
    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
}
