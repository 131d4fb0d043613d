// Kestrel on the EpollSharp transport, from the EpollSharp.AspNetCore package: one request over 127.0.0.1, checked.
using System;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Runtime.InteropServices;
using EpollSharp.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
builder.WebHost.UseEpollSharp(options => options.LoopCount = 1);
builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
WebApplication app = builder.Build();
app.MapGet("/echo/{text}", (string text) => text);
await app.StartAsync();
try
{
    string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
    string body = await client.GetStringAsync(address + "/echo/consumer");
    EpollSharpTransportFactory transport = app.Services.GetRequiredService<EpollSharpTransportFactory>();
    if (body != "consumer" || transport.Group is not { AcceptedCount: 1 })
    {
        Console.Error.WriteLine($"unexpected: body '{body}', accepted {transport.Group?.AcceptedCount}");
        return 1;
    }

    Console.WriteLine($"WebEcho on {RuntimeInformation.FrameworkDescription} ({AppContext.TargetFrameworkName}): GET /echo/consumer -> '{body}' over the EpollSharp transport ({transport.Group.Backend})");
    return 0;
}
finally
{
    await app.StopAsync();
}
