using System;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using EpollSharp.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Snippets;

/// <summary>
/// Kestrel on EpollSharp (docs/articles/kestrel.md): a minimal API on the EpollSharp transport with Kestrel's own
/// limits set as usual, on 127.0.0.1:0; the snippet fetches a page and checks that the EpollSharp loops accepted it.
/// </summary>
internal static class Kestrel
{
    public static void Run() => RunAsync().GetAwaiter().GetResult();

    private static async Task RunAsync()
    {
        #region use-epollsharp
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseEpollSharp(options =>
        {
            options.LoopCount = 2;                       // 0: one loop per processor
            options.OutputPauseThreshold = 128 * 1024;   // Kestrel's flush waits beyond this much unsent output
        });

        // Kestrel's own settings are unchanged: endpoints, limits, timeouts, HTTPS, protocols.
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Loopback, 0);
            kestrel.Limits.MaxRequestBodySize = 1024 * 1024;
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(30);
        });

        WebApplication app = builder.Build();
        app.MapGet("/plaintext", () => "Hello, World!");
        await app.StartAsync();
        #endregion

        try
        {
            string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var client = new HttpClient { BaseAddress = new Uri(address) };
            string text = await client.GetStringAsync("/plaintext");
            Check(text == "Hello, World!", "the page");
            var transport = app.Services.GetRequiredService<EpollSharpTransportFactory>();
            Check(transport.Group is { AcceptedCount: 1 }, "one connection accepted by the EpollSharp loops");
            Console.WriteLine($"{address}/plaintext: {text} (accepted by {transport.Group!.Loops.Count} EpollSharp loops)");
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    private static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException("failed: " + what);
        }
    }
}
