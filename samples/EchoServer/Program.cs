using System;
using System.IO;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using EpollSharp.Connections;
using EpollSharp.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace EchoServer;

/// <summary>
/// An echo server on EpollSharp, run by the .NET Generic Host (the EpollSharp.Hosting package): N event loops (one thread
/// each), a listener per loop with SO_REUSEPORT or one acceptor, settings from appsettings.json, the environment and the
/// command line, a graceful shutdown on SIGINT/SIGTERM, and one line of statistics at the end.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        if (Array.Exists(args, a => a is "-h" or "--help" or "-?"))
        {
            Console.WriteLine(EchoOptions.Help());
            return 0;
        }

        string[] commandLine;
        try
        {
            commandLine = EchoOptions.NormalizeArguments(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine("EchoServer --help lists the options.");
            return 2;
        }

        // Open stderr now: .NET opens the console streams lazily (dup of the descriptor), and the handler writes to it when
        // accepting pauses, which is when the process may have no descriptor left to give.
        Console.Error.Flush();

        // appsettings.json is read next to the executable, wherever it is started from (unless --contentRoot DIR or
        // DOTNET_CONTENTROOT names another folder); the flags map to the section's keys.
        bool contentRootGiven = Array.Exists(commandLine, a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase))
            || Environment.GetEnvironmentVariable("DOTNET_CONTENTROOT") is { Length: > 0 };
        HostApplicationBuilder builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            Args = commandLine,
            ContentRootPath = contentRootGiven ? null : AppContext.BaseDirectory,
        });
        builder.Configuration.AddCommandLine(commandLine, EchoOptions.SwitchMappings());

        // Standard output is the server's own: its ready line and its statistics. Logs go to standard error.
        builder.Services.Configure<ConsoleLoggerOptions>(options => options.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Services.Configure<ConsoleLifetimeOptions>(options => options.SuppressStatusMessages = true);

        var options = new EchoOptions();
        X509Certificate2? certificate = null;
        try
        {
            builder.Configuration.GetSection(EchoOptions.SectionName).Bind(options);
            options.Validate();
            if (options.TlsEnabled)
            {
                certificate = options.LoadCertificate();
            }
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine("EchoServer --help lists the options.");
            return 2;
        }

        // --api callback: the handler's callbacks on the loops; --api pipe|stream: an async application over the pipes
        // (with TLS, when --tls is given). Either way one handler serves every loop, and counts the bytes it echoed.
        EchoApi api = options.ServingApi;
        Func<long> bytesEchoed;
        if (api == EchoApi.Callback)
        {
            var handler = new EchoHandler();
            bytesEchoed = () => handler.BytesEchoed;
            builder.Services.AddSingleton(handler);
            builder.Services.AddEpollSharpServer<EchoHandler>(options.Configure);
        }
        else
        {
            TlsServerOptions? tls = certificate is null ? null : new TlsServerOptions(new SslServerAuthenticationOptions
            {
                // The chain is built once, here, instead of in every handshake.
                ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true),
            });
            var echo = new PipeEcho();
            bytesEchoed = () => echo.BytesEchoed;
            bool onLoop = options.ContinuationsOnLoop;
            builder.Services.AddEpollSharpServer(_ => echo.CreateHandler(api, tls, onLoop));
            builder.Services.Configure<EpollSharpServerOptions>(options.Configure);
        }

        // The host's deadline for the whole stop: the drain, and some time to close what is left.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(options.DrainTimeout + 10));

        using IHost app = builder.Build();
        try
        {
            app.Start();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or PlatformNotSupportedException)
        {
            string where = options.Systemd ? "the sockets passed by socket activation" : $"{options.Host}:{options.Port}";
            string message = e is PlatformNotSupportedException
                ? $"backend {EchoOptions.BackendName(options.Backend)}: {e.Message}"
                : $"cannot listen on {where}: {(e.InnerException as SocketException)?.Message ?? e.Message}";
            Console.Error.WriteLine(message);
            return 1;
        }

        EpollSharpServer server = app.Services.GetRequiredService<EpollSharpServer>();
        // The api, the continuations and TLS only when not the defaults, so that the line stays what it was for a plain callback server.
        string apiText = api == EchoApi.Callback ? "" : " api=" + EchoOptions.ApiName(api);
        string tlsOn = certificate is null ? "" : " tls=on";
        string continuations = options.ContinuationsOnLoop ? "" : " continuations=pool";
        Console.WriteLine($"listening on {server.Listeners[0].LocalEndPoint} backend={EchoOptions.BackendName(server.Group.Backend)} loops={server.Group.Loops.Count}{apiText}{continuations}{tlsOn}");

        // Until SIGTERM or SIGINT (the host's console lifetime), or until the loops die; then the host stops the server,
        // which drains the connections for --drain-timeout.
        app.WaitForShutdown();
        Console.WriteLine($"stats: connections={server.Group.AcceptedCount} bytes={bytesEchoed()} allocated={GC.GetTotalAllocatedBytes(true)}");
        return server.Group.Completion.IsFaulted ? 1 : 0;
    }
}
