using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace EpollSharp.AspNetCore.Tests;

/// <summary>Kestrel on the EpollSharp transport as other programs see it: curl (HTTP/1.1, HTTP/2 over TLS, a Unix socket), headless Chromium, and samples/HelloWeb run as a process.</summary>
public class ClientToolTests
{
    private const string Curl = "/usr/bin/curl";

    private static void SkipUnlessCurl() => Skip.IfNot(File.Exists(Curl), "curl is not installed at /usr/bin/curl");

    private static void MapProtocol(WebApplication app) =>
        app.MapGet("/proto", (HttpContext c) => $"{c.Request.Protocol} {c.Request.IsHttps}");

    [SkippableFact]
    public async Task Curl_gets_HTTP_1_1_and_HTTP_2_over_TLS()
    {
        SkipUnlessCurl();
        await using WebServer server = await WebServer.StartAsync(MapProtocol, kestrel: k => k.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Protocols = HttpProtocols.Http1AndHttp2;
            listen.UseHttps(WebKit.Certificate);
        }));
        string url = $"https://127.0.0.1:{server.Port}/proto";

        var (code, output, error) = WebKit.Run(Curl, TimeSpan.FromSeconds(60), "-sSk", "--http2", "-w", "|%{http_version}", url);
        Assert.True(code == 0, error);
        Assert.Equal("HTTP/2 True|2", output);

        (code, output, error) = WebKit.Run(Curl, TimeSpan.FromSeconds(60), "-sSk", "--http1.1", "-w", "|%{http_version}", url);
        Assert.True(code == 0, error);
        Assert.Equal("HTTP/1.1 True|1.1", output);
    }

    [SkippableFact]
    public async Task Curl_gets_plain_HTTP_1_1()
    {
        SkipUnlessCurl();
        await using WebServer server = await WebServer.StartAsync(MapProtocol);
        var (code, output, error) = WebKit.Run(Curl, TimeSpan.FromSeconds(60), "-sS", "-w", "|%{http_version}", $"http://127.0.0.1:{server.Port}/proto");
        Assert.True(code == 0, error);
        Assert.Equal("HTTP/1.1 False|1.1", output);
    }

    [SkippableFact]
    public async Task A_Unix_socket_endpoint_is_served()
    {
        SkipUnlessCurl();
        string path = Path.Combine(Path.GetTempPath(), $"epollsharp-kestrel-{Environment.ProcessId}-{Guid.NewGuid():N}.sock");
        try
        {
            await using (WebServer server = await WebServer.StartAsync(
                app => app.MapGet("/unix", () => "over a unix socket"),
                kestrel: k => k.ListenUnixSocket(path)))
            {
                Assert.True(File.Exists(path));
                var (code, output, error) = WebKit.Run(Curl, TimeSpan.FromSeconds(60), "-sS", "--unix-socket", path, "http://localhost/unix");
                Assert.True(code == 0, error);
                Assert.Equal("over a unix socket", output);
                Assert.Equal(1, server.Factory.Group!.AcceptedCount);
            }

            // The listener removes its socket file when it stops.
            Assert.False(File.Exists(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [SkippableFact]
    public async Task Headless_Chromium_loads_HelloWeb_over_the_EpollSharp_transport()
    {
        string? chromium = new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists);
        Skip.If(chromium is null, "chromium is not installed (.ci/run installs Debian's chromium as root)");
        await using var web = await HelloWebProcess.StartAsync("epollsharp");
        string profile = Directory.CreateTempSubdirectory("epollsharp-chromium-").FullName;
        try
        {
            var (code, dom, error) = WebKit.Run(chromium!, TimeSpan.FromSeconds(120),
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--user-data-dir=" + profile, "--dump-dom", web.Address + "/");
            Assert.True(code == 0, $"chromium exited {code}: {error}");
            Assert.Contains("<title>HelloWeb on EpollSharp</title>", dom, StringComparison.Ordinal);
            Assert.Contains("Served by Kestrel on the EpollSharp transport", dom, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(profile, recursive: true);
        }

        Assert.Equal(0, await web.StopAsync());
    }

    [SkippableTheory]
    [InlineData("epollsharp", "EpollSharp", null)]
    [InlineData("epollsharp", "EpollSharp", "io_uring")]
    [InlineData("sockets", "Sockets", null)]
    public async Task HelloWeb_serves_and_stops_on_SIGTERM(string transport, string name, string? backend)
    {
        if (backend == "io_uring")
        {
            WebKit.SkipUnlessAvailable(EventLoopBackend.IoUring);
        }

        await using var web = await HelloWebProcess.StartAsync(transport, backend);
        using var client = new HttpClient { BaseAddress = new Uri(web.Address), Timeout = TimeSpan.FromSeconds(30) };
        using (HttpResponseMessage plaintext = await client.GetAsync("/plaintext"))
        {
            Assert.Equal("text/plain", plaintext.Content.Headers.ContentType!.MediaType);
            Assert.Equal("Hello, World!", await plaintext.Content.ReadAsStringAsync());
        }

        Assert.Equal("{\"message\":\"Hello, World!\"}", await client.GetStringAsync("/json"));
        Assert.Contains($"on the {name} transport", await client.GetStringAsync("/"), StringComparison.Ordinal);
        client.Dispose();
        Assert.Equal(0, await web.StopAsync());
    }
}

/// <summary>samples/HelloWeb (its built dll) run with <c>dotnet</c> on 127.0.0.1:0; the address is read from its "listening on" line.</summary>
internal sealed class HelloWebProcess : IAsyncDisposable
{
    private static readonly object s_buildLock = new();
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private HelloWebProcess(Process process) => _process = process;

    public string Address { get; private set; } = "";

    /// <summary>Starts HelloWeb on <paramref name="transport"/>; with <paramref name="backend"/>, passes <c>--backend</c>.</summary>
    public static async Task<HelloWebProcess> StartAsync(string transport, string? backend = null)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the EpollSharp transport is tested on Linux");
        string dll = Locate();
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "--transport", transport, "--urls", "http://127.0.0.1:0" })
        {
            info.ArgumentList.Add(a);
        }

        if (backend is not null)
        {
            info.ArgumentList.Add("--backend");
            info.ArgumentList.Add(backend);
        }

        var web = new HelloWebProcess(Process.Start(info)!);
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        web._process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                listening.TrySetException(new InvalidOperationException("HelloWeb ended before listening: " + web.Output));
                return;
            }

            lock (web._output)
            {
                web._output.AppendLine(e.Data);
            }

            if (e.Data.StartsWith("listening on ", StringComparison.Ordinal))
            {
                listening.TrySetResult(e.Data);
            }
        };
        web._process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (web._output)
                {
                    web._output.AppendLine(e.Data);
                }
            }
        };
        web._process.BeginOutputReadLine();
        web._process.BeginErrorReadLine();
        string line = await listening.Task.WaitAsync(TimeSpan.FromSeconds(60));
        // The EpollSharp transport names the backend its loops run on (Auto's choice, which EPOLLSHARP_BACKEND may set,
        // unless --backend said).
        string expected = transport != "epollsharp" ? $"\\(transport {transport}\\)$"
            : $"\\(transport epollsharp, backend {backend ?? "(epoll|io_uring|managed)"}\\)$";
        Assert.Matches(expected, line);
        web.Address = line.Split(' ')[2];
        Assert.StartsWith("http://127.0.0.1:", web.Address, StringComparison.Ordinal);
        return web;
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Sends SIGTERM and returns the exit code.</summary>
    public async Task<int> StopAsync()
    {
        Assert.Equal(0, kill(_process.Id, 15));
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return _process.ExitCode;
    }

    public ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }

        _process.Dispose();
        return ValueTask.CompletedTask;
    }

    [DllImport("libc", SetLastError = true)]
#pragma warning disable SA1300, IDE1006 // the C function's name
    private static extern int kill(int pid, int signal);
#pragma warning restore SA1300, IDE1006

    /// <summary>The sample's dll in the configuration the tests were built in (the solution's build makes it; built here when missing).</summary>
    private static string Locate()
    {
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        string root = WebKit.RepoRoot();
        string dll = Path.Combine(root, "samples", "HelloWeb", "bin", configuration, "net10.0", "HelloWeb.dll");
        lock (s_buildLock)
        {
            if (!File.Exists(dll))
            {
                var (code, output, error) = WebKit.Run("dotnet", TimeSpan.FromMinutes(5), "build", Path.Combine(root, "samples", "HelloWeb", "HelloWeb.csproj"), "-c", configuration, "-nologo", "-v", "q");
                Assert.True(code == 0, "building samples/HelloWeb failed: " + output + error);
            }
        }

        return dll;
    }
}
