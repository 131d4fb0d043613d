using System.Diagnostics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace EpollSharp.AspNetCore.Tests;

/// <summary>An in-process WebApplication on the EpollSharp transport, listening on 127.0.0.1:0 unless told otherwise.</summary>
internal sealed class WebServer : IAsyncDisposable
{
    private WebServer(WebApplication app)
    {
        App = app;
        Factory = app.Services.GetRequiredService<EpollSharpTransportFactory>();
        Addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToArray();
    }

    public WebApplication App { get; }

    public EpollSharpTransportFactory Factory { get; }

    public string[] Addresses { get; }

    /// <summary>The first address, e.g. <c>http://127.0.0.1:40123</c>.</summary>
    public Uri BaseAddress => new(Addresses[0].Replace("[::]", "[::1]", StringComparison.Ordinal));

    public int Port => BaseAddress.Port;

    public static async Task<WebServer> StartAsync(
        Action<WebApplication> map,
        Action<KestrelServerOptions>? kestrel = null,
        Action<EpollSharpTransportOptions>? transport = null)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the EpollSharp transport is tested on Linux");
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseEpollSharp(o =>
        {
            o.LoopCount = 2;
            transport?.Invoke(o);
        });
        builder.WebHost.ConfigureKestrel(k =>
        {
            if (kestrel is null)
            {
                k.Listen(IPAddress.Loopback, 0);
            }
            else
            {
                kestrel(k);
            }
        });
        WebApplication app = builder.Build();
        map(app);
        await app.StartAsync();
        return new WebServer(app);
    }

    public HttpClient Client(HttpMessageHandler? handler = null) =>
        new(handler ?? new SocketsHttpHandler(), disposeHandler: true) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await App.StopAsync(cts.Token);
        await App.DisposeAsync();
    }
}

internal static class WebKit
{
    private static readonly Lazy<X509Certificate2> s_certificate = new(CreateCertificate);

    /// <summary>A self-signed certificate for localhost and 127.0.0.1, made once per test run.</summary>
    public static X509Certificate2 Certificate => s_certificate.Value;

    /// <summary>Skips the test, with the reason the loop gives, where <paramref name="backend"/> cannot be set up here.</summary>
    public static void SkipUnlessAvailable(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the EpollSharp transport is tested on Linux");
        try
        {
            using var loop = new EventLoop(new EventLoopOptions { Backend = backend });
        }
        catch (PlatformNotSupportedException e)
        {
            Skip.If(true, $"{backend} is not available here: {e.Message}");
        }
    }

    public static Socket Connect(EndPoint endPoint, int timeoutMs = 20_000)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified)
        {
            ReceiveTimeout = timeoutMs,
            SendTimeout = timeoutMs,
        };
        socket.Connect(endPoint);
        return socket;
    }

    /// <summary>Reads until the peer closes (or resets); returns what came.</summary>
    public static byte[] ReceiveToEnd(this Socket socket)
    {
        var all = new MemoryStream();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            int n;
            try
            {
                n = socket.Receive(buffer);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                break;
            }

            if (n == 0)
            {
                break;
            }

            all.Write(buffer, 0, n);
        }

        return all.ToArray();
    }

    /// <summary>The byte at <paramref name="i"/> of the test bodies: a pattern that shows a byte lost, doubled or moved.</summary>
    public static byte Pattern(long i) => (byte)((i * 31 + (i >> 8)) & 0xFF);

    /// <summary>Runs a program and returns its exit code and standard output.</summary>
    public static (int ExitCode, string Output, string Error) Run(string file, TimeSpan timeout, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        using Process process = Process.Start(info)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit((int)timeout.TotalMilliseconds))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {timeout}");
        }

        process.WaitForExit();
        return (process.ExitCode, output.Result, error.Result);
    }

    public static string RepoRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "EpollSharp.sln")))
        {
            dir = Path.GetDirectoryName(dir);
        }

        return dir ?? throw new InvalidOperationException("EpollSharp.sln not found above " + AppContext.BaseDirectory);
    }

    private static X509Certificate2 CreateCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, false));
        using X509Certificate2 created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
#if NET9_0_OR_GREATER
        return X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pfx), password: null);
#else
        return new X509Certificate2(created.Export(X509ContentType.Pfx));
#endif
    }
}
