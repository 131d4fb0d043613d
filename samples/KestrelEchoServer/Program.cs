using System;
using System.Buffers;
using System.Globalization;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace KestrelEchoServer;

/// <summary>
/// An echo server on Kestrel, ASP.NET Core's server, with its default transport (sockets: .NET's socket engine and the
/// thread pool) and no HTTP at all: one endpoint whose connection middleware reads <c>Transport.Input</c> and writes every
/// segment to <c>Transport.Output</c> (ReadAsync, Write, AdvanceTo, FlushAsync), the same loop as EchoServer's
/// <c>--api pipe</c>. Logs only warnings, on stderr. On SIGTERM/SIGINT the host stops Kestrel, which asks every connection
/// to close (<see cref="IConnectionLifetimeNotificationFeature.ConnectionClosedRequested"/>: the echo returns what it has read, then ends
/// the connection) and aborts what is left after <c>--drain-timeout</c>.
/// </summary>
internal static class Program
{
    private const string Usage = "usage: KestrelEchoServer [--host 127.0.0.1] [--port 8080] [--drain-timeout SECONDS]\n"
        + "Prints 'listening on HOST:PORT backend=sockets loops=1' when ready and, after SIGTERM or SIGINT,\n"
        + "'stats: connections=N bytes=N allocated=N'.";

    private static long s_connections;
    private static long s_bytesEchoed;

    private static async Task<int> Main(string[] args)
    {
        IPAddress host = IPAddress.Loopback;
        int port = 8080;
        int drainSeconds = 5;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            if (name is "-h" or "--help")
            {
                Console.WriteLine(Usage);
                return 0;
            }

            string? value = i + 1 < args.Length ? args[++i] : null;
            bool ok = name switch
            {
                "--host" => IPAddress.TryParse(value, out host!),
                "--port" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port <= 65535,
                "--drain-timeout" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out drainSeconds) && drainSeconds <= 3600,
                _ => false,
            };
            if (!ok)
            {
                Console.Error.WriteLine($"bad option {name} {value}");
                Console.Error.WriteLine(Usage);
                return 2;
            }
        }

        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = Array.Empty<string>() });
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(options => options.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.Configure<ConsoleLifetimeOptions>(options => options.SuppressStatusMessages = true);
        builder.Services.Configure<HostOptions>(options => options.ShutdownTimeout = TimeSpan.FromSeconds(drainSeconds));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Listen(host, port, listen => listen.Run(EchoAsync));
        });

        await using WebApplication app = builder.Build();
        try
        {
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            Console.Error.WriteLine($"cannot listen on {host}:{port}: {(e.InnerException as SocketException)?.Message ?? e.Message}");
            return 1;
        }

        // Kestrel records the address it bound (with the port it was given for --port 0).
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var bound = new Uri(address);
        Console.WriteLine($"listening on {bound.Host}:{bound.Port} backend=sockets loops=1");

        await app.WaitForShutdownAsync().ConfigureAwait(false);
        Console.WriteLine($"stats: connections={Interlocked.Read(ref s_connections)} bytes={Interlocked.Read(ref s_bytesEchoed)} allocated={GC.GetTotalAllocatedBytes(true)}");
        return 0;
    }

    /// <summary>The echo: each segment read is written to the output, consumed, then flushed, until the peer's FIN or the server's shutdown.</summary>
    private static async Task EchoAsync(ConnectionContext connection)
    {
        Interlocked.Increment(ref s_connections);
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        long echoed = 0;

        // The server's shutdown turns the waiting read into a canceled one, which returns what the input holds: echoed, then the end.
        CancellationToken closeRequested = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? CancellationToken.None;
        using CancellationTokenRegistration registration = closeRequested.Register(static state => ((PipeReader)state!).CancelPendingRead(), input);
        try
        {
            while (true)
            {
                ReadResult result = await input.ReadAsync().ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = result.Buffer;
                long length = buffer.Length;
                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    output.Write(segment.Span);
                }

                input.AdvanceTo(buffer.End);
                FlushResult flush = await output.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    return; // the connection is gone
                }

                echoed += length;
                if (result.IsCompleted || result.IsCanceled)
                {
                    return; // the peer's FIN, or the server's shutdown: returning ends the connection
                }
            }
        }
        catch (ConnectionResetException)
        {
            // Reset by the peer.
        }
        finally
        {
            Interlocked.Add(ref s_bytesEchoed, echoed);
        }
    }
}
