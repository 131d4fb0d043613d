// HelloWeb: Kestrel on the EpollSharp transport (or the socket transport, to compare).
//
//   dotnet run --project samples/HelloWeb -c Release -- [--transport epollsharp|sockets] [--urls http://127.0.0.1:5000;https://127.0.0.1:5001]
//                                                       [--loops N] [--inline true|false] [--backend auto|epoll|io_uring|managed|kqueue]
//                                                       (EpollSharp: loop count; RunContinuationsOnLoop, false by default;
//                                                       the loops' backend, auto by default)
//
//   GET /plaintext  "Hello, World!" (text/plain)
//   GET /json       {"message":"Hello, World!"}
//   GET /           a small HTML page naming the transport that served it
//
// An https:// URL is served with a self-signed certificate for localhost made on the first run and kept under the
// user's local application data (or the temp directory). Once listening it prints "listening on <addresses> (transport
// epollsharp, backend <backend>)" (or "(transport sockets)"); SIGTERM or Ctrl+C stops it gracefully (exit code 0).
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Serialization;
using EpollSharp;
using EpollSharp.AspNetCore;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

string transport = "epollsharp";
var rest = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--transport" && i + 1 < args.Length)
    {
        transport = args[++i];
    }
    else if (args[i].StartsWith("--transport=", StringComparison.Ordinal))
    {
        transport = args[i]["--transport=".Length..];
    }
    else
    {
        rest.Add(args[i]);
    }
}

if (transport is not ("epollsharp" or "sockets"))
{
    Console.Error.WriteLine($"--transport must be epollsharp or sockets, not '{transport}'");
    return 2;
}

var builder = WebApplication.CreateSlimBuilder(rest.ToArray());
EventLoopBackend backend = builder.Configuration["backend"] switch
{
    null or "auto" => EventLoopBackend.Auto,
    "epoll" => EventLoopBackend.Epoll,
    "io_uring" => EventLoopBackend.IoUring,
    "managed" => EventLoopBackend.Managed,
    "kqueue" => EventLoopBackend.Kqueue,
    _ => (EventLoopBackend)(-1),
};
if (!Enum.IsDefined(backend))
{
    Console.Error.WriteLine($"--backend must be auto, epoll, io_uring, managed or kqueue, not '{builder.Configuration["backend"]}'");
    return 2;
}

builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, HelloJsonContext.Default));
if (transport == "epollsharp")
{
    builder.WebHost.UseEpollSharp(o =>
    {
        if (int.TryParse(builder.Configuration["loops"], out int loops))
        {
            o.LoopCount = loops;
        }

        // --backend io_uring: the loops on io_uring's completion path (the first bind fails where it is unavailable).
        o.Backend = backend;

        // --inline true: Kestrel's processing on the loop threads (no hop to the thread pool and back); false: the default.
        if (builder.Configuration["inline"] is { } inline)
        {
            o.RunContinuationsOnLoop = bool.TryParse(inline, out bool onLoop)
                ? onLoop
                : throw new ArgumentException($"--inline must be true or false, not '{inline}'", "inline");
        }
    });
}

string urls = builder.Configuration["urls"] ?? "http://127.0.0.1:5000";
if (urls.Contains("https://", StringComparison.OrdinalIgnoreCase))
{
    X509Certificate2 certificate = DevelopmentCertificate.LoadOrCreate();
    builder.WebHost.UseKestrelHttpsConfiguration();
    builder.WebHost.ConfigureKestrel(k => k.ConfigureHttpsDefaults(h => h.ServerCertificate = certificate));
}

builder.WebHost.UseUrls(urls);
builder.WebHost.ConfigureKestrel(k => k.AddServerHeader = false);

var app = builder.Build();
string transportName = transport == "epollsharp" ? "EpollSharp" : "Sockets";

app.MapGet("/plaintext", () => Results.Text("Hello, World!", "text/plain"));
app.MapGet("/json", () => new HelloMessage("Hello, World!"));
app.MapGet("/", (HttpContext context) => Results.Content(
    $"""
    <!DOCTYPE html>
    <html lang="en">
    <head><meta charset="utf-8"><title>HelloWeb on {transportName}</title></head>
    <body>
    <h1>Hello, World!</h1>
    <p id="transport">Served by Kestrel on the {transportName} transport</p>
    <p>Protocol {context.Request.Protocol}, {(context.Request.IsHttps ? "HTTPS" : "HTTP")}, connection {context.Connection.Id}.</p>
    </body>
    </html>
    """,
    "text/html; charset=utf-8"));

app.Lifetime.ApplicationStarted.Register(() =>
{
    ICollection<string> addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
    string backendName = app.Services.GetService<EpollSharpTransportFactory>()?.Group?.Backend switch
    {
        null => "",
        EventLoopBackend.IoUring => ", backend io_uring",
        EventLoopBackend b => $", backend {b.ToString().ToLowerInvariant()}",
    };
    Console.WriteLine($"listening on {string.Join(' ', addresses)} (transport {transport}{backendName})");
    Console.Out.Flush();
});

try
{
    await app.RunAsync();
}
catch (PlatformNotSupportedException e)
{
    // The backend asked for cannot run here (io_uring switched off, kqueue without libkqueue on Linux).
    Console.Error.WriteLine($"cannot start the EpollSharp transport: {e.Message}");
    return 1;
}

return 0;

/// <summary>The /json response.</summary>
internal sealed record HelloMessage(string Message);

/// <summary>System.Text.Json's source generator for the /json response (no reflection).</summary>
[JsonSerializable(typeof(HelloMessage))]
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
internal sealed partial class HelloJsonContext : JsonSerializerContext
{
}

/// <summary>A self-signed certificate for localhost, made on the first run and kept for the next ones.</summary>
internal static class DevelopmentCertificate
{
    public static X509Certificate2 LoadOrCreate()
    {
        string baseDir = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData);
        if (string.IsNullOrEmpty(baseDir))
        {
            baseDir = Path.GetTempPath();
        }

        string dir = Path.Combine(baseDir, "EpollSharp.HelloWeb");
        string path = Path.Combine(dir, "localhost.pfx");
        if (File.Exists(path))
        {
            try
            {
                var existing = X509CertificateLoader.LoadPkcs12FromFile(path, password: null);
                if (existing.NotAfter > DateTime.Now.AddDays(1))
                {
                    return existing;
                }
            }
            catch (CryptographicException)
            {
                // Unreadable: make a new one below.
            }
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        names.AddIpAddress(System.Net.IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, false));
        using X509Certificate2 created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(1));
        byte[] pfx = created.Export(X509ContentType.Pfx);
        Directory.CreateDirectory(dir);
        string temp = path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllBytes(temp, pfx);
        if (!OperatingSystem.IsWindows())
        {
            // The private key: readable by the owner only.
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        File.Move(temp, path, overwrite: true);
        return X509CertificateLoader.LoadPkcs12(pfx, password: null);
    }
}
