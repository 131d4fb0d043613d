using System.Net.Http.Headers;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace EpollSharp.AspNetCore.Tests;

/// <summary>
/// Kestrel on the EpollSharp transport, driven by HttpClient and raw sockets over 127.0.0.1, on the transport's default
/// backend (<see cref="HttpTestsOnIoUring"/> runs every case again on io_uring).
/// </summary>
public class HttpTests
{
    /// <summary>The backend the transport's loops run on; <see cref="EventLoopBackend.Auto"/> leaves the option as it is.</summary>
    protected virtual EventLoopBackend Backend => EventLoopBackend.Auto;

    /// <summary>Starts Kestrel on the transport as <see cref="WebServer.StartAsync"/> does, on <see cref="Backend"/>.</summary>
    private async Task<WebServer> Start(
        Action<WebApplication> map,
        Action<KestrelServerOptions>? kestrel = null,
        Action<EpollSharpTransportOptions>? transport = null)
    {
        if (Backend == EventLoopBackend.Auto)
        {
            return await WebServer.StartAsync(map, kestrel, transport);
        }

        WebKit.SkipUnlessAvailable(Backend);
        WebServer server = await WebServer.StartAsync(map, kestrel, o =>
        {
            o.Backend = Backend;
            transport?.Invoke(o);
        });
        Assert.Equal(Backend, server.Factory.Group!.Backend);
        return server;
    }

    private static void MapSized(WebApplication app) =>
        app.MapGet("/bytes/{size:long}", async (long size, HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = size;
            var chunk = new byte[64 * 1024];
            for (long sent = 0; sent < size;)
            {
                int n = (int)Math.Min(chunk.Length, size - sent);
                for (int i = 0; i < n; i++)
                {
                    chunk[i] = WebKit.Pattern(sent + i);
                }

                await context.Response.Body.WriteAsync(chunk.AsMemory(0, n), context.RequestAborted);
                sent += n;
            }
        });

    [SkippableTheory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(4095L)]
    [InlineData(65536L)]
    [InlineData(1024L * 1024 + 7)]
    [InlineData(64L * 1024 * 1024)]
    public async Task Responses_of_every_size_arrive_whole(long size)
    {
        await using WebServer server = await Start(MapSized);
        using HttpClient client = server.Client();
        using HttpResponseMessage response = await client.GetAsync($"/bytes/{size}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(size, response.Content.Headers.ContentLength);
        await using Stream body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[128 * 1024];
        long received = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != WebKit.Pattern(received + i))
                {
                    Assert.Fail($"byte {received + i} is {buffer[i]}, expected {WebKit.Pattern(received + i)}");
                }
            }

            received += n;
        }

        Assert.Equal(size, received);
        Assert.NotNull(server.Factory.Group);
        Assert.Equal(1, server.Factory.Group!.AcceptedCount);
    }

    [SkippableFact]
    public async Task Keep_alive_reuses_one_connection_for_many_requests()
    {
        await using WebServer server = await Start(app => app.MapGet("/id", (HttpContext c) => c.Connection.Id));
        using HttpClient client = server.Client();
        var ids = new HashSet<string>();
        for (int i = 0; i < 50; i++)
        {
            ids.Add(await client.GetStringAsync("/id"));
        }

        Assert.Single(ids);
        Assert.Equal(1, server.Factory.Group!.AcceptedCount);
    }

    [SkippableFact]
    public async Task A_request_body_streamed_in_is_read_whole()
    {
        await using WebServer server = await Start(app => app.MapPost("/sum", async (HttpContext context) =>
        {
            var buffer = new byte[32 * 1024];
            long count = 0;
            long mismatches = 0;
            int n;
            while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
            {
                for (int i = 0; i < n; i++)
                {
                    mismatches += buffer[i] == WebKit.Pattern(count + i) ? 0 : 1;
                }

                count += n;
            }

            return $"{count} {mismatches}";
        }));
        const long size = 16L * 1024 * 1024 + 3;
        using HttpClient client = server.Client();
        using var content = new StreamContent(new PatternStream(size), 50_000);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");

        // No Content-Length: sent chunked, in pieces as the stream yields them.
        using HttpResponseMessage response = await client.PostAsync("/sum", content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"{size} 0", await response.Content.ReadAsStringAsync());
    }

    [SkippableFact]
    public async Task A_client_that_aborts_mid_response_is_noticed_through_RequestAborted()
    {
        var aborted = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        Exception? ended = null;
        await using WebServer server = await Start(app => app.MapGet("/endless", async (HttpContext context) =>
        {
            context.RequestAborted.Register(() => aborted.TrySetResult(true));
            var chunk = new byte[16 * 1024];
            started.TrySetResult(true);
            try
            {
                while (!context.RequestAborted.IsCancellationRequested)
                {
                    await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                }
            }
            catch (Exception e)
            {
                ended = e;
            }
        }));

        using (Socket socket = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port)))
        {
            socket.Send(Encoding.ASCII.GetBytes("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n"));
            var buffer = new byte[64 * 1024];
            int got = 0;
            while (got < 256 * 1024)
            {
                got += socket.Receive(buffer);
            }

            await started.Task;

            // Close with unread data: the kernel resets the connection.
            socket.LingerState = new LingerOption(true, 0);
        }

        if (await Task.WhenAny(aborted.Task, Task.Delay(TimeSpan.FromSeconds(10))) != aborted.Task)
        {
            var (_, ss, _) = WebKit.Run("ss", TimeSpan.FromSeconds(10), "-tnoiep", "sport", "=", ":" + server.Port);
            Assert.Fail($"not aborted; handler ended with {ended}; group connections {server.Factory.Group!.ConnectionCount}; {ss}");
        }
    }

    [SkippableFact]
    public async Task A_slow_reader_gets_every_byte()
    {
        const long size = 8L * 1024 * 1024;
        await using WebServer server = await Start(MapSized);
        // A small receive buffer (set before connecting, so the window is small from the start): the server's output backs up.
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 16 * 1024, ReceiveTimeout = 20_000 };
        socket.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
        socket.Send(Encoding.ASCII.GetBytes($"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));

        // Read nothing for a while (the server's output backs up), then slowly, in small pieces.
        await Task.Delay(500);
        var all = new MemoryStream();
        var buffer = new byte[8 * 1024];
        int reads = 0;
        int n;
        while ((n = socket.Receive(buffer)) > 0)
        {
            all.Write(buffer, 0, n);
            if (++reads % 64 == 0)
            {
                await Task.Delay(2);
            }
        }

        byte[] response = all.ToArray();
        int bodyStart = IndexOf(response, "\r\n\r\n"u8.ToArray()) + 4;
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(response, 0, 12));
        Assert.Equal(size, response.Length - bodyStart);
        for (int i = bodyStart; i < response.Length; i++)
        {
            if (response[i] != WebKit.Pattern(i - bodyStart))
            {
                Assert.Fail($"byte {i - bodyStart} differs");
            }
        }
    }

    [SkippableFact]
    public async Task Pipelined_requests_are_answered_in_order()
    {
        await using WebServer server = await Start(app => app.MapGet("/n/{i:int}", (int i) => $"<{i}>"));
        using Socket socket = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
        var requests = new StringBuilder();
        const int count = 32;
        for (int i = 0; i < count; i++)
        {
            requests.Append($"GET /n/{i} HTTP/1.1\r\nHost: x\r\n{(i == count - 1 ? "Connection: close\r\n" : "")}\r\n");
        }

        // All of them in one write: the server finds them in one read.
        socket.Send(Encoding.ASCII.GetBytes(requests.ToString()));
        string text = Encoding.ASCII.GetString(socket.ReceiveToEnd());
        int position = 0;
        for (int i = 0; i < count; i++)
        {
            int at = text.IndexOf($"<{i}>", position, StringComparison.Ordinal);
            Assert.True(at >= 0, $"response {i} missing or out of order in: {text}");
            position = at;
        }

        Assert.Equal(count, text.Split("HTTP/1.1 200 OK").Length - 1);
    }

    [SkippableFact]
    public async Task Shutdown_finishes_the_request_in_flight_and_refuses_new_connections()
    {
        var entered = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        WebServer server = await Start(app => app.MapGet("/slow", async () =>
        {
            entered.TrySetResult(true);
            await release.Task;
            return "finished";
        }));
        try
        {
            using HttpClient client = server.Client();
            Task<HttpResponseMessage> inFlight = client.GetAsync("/slow");
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(20));
            Task stopping = server.App.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);

            // The listening socket closes: a new connection is refused (wait for it, the stop runs concurrently). A probe
            // whose handshake was under way as the listener closed is reset instead (the kernel resets what the closing
            // listener had not accepted): the close is in progress, so probe again.
            var deadline = DateTime.UtcNow.AddSeconds(10);
            SocketError refused = SocketError.Success;
            while (DateTime.UtcNow < deadline)
            {
                try
                {
                    using Socket probe = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
                    await Task.Delay(20);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
                {
                    await Task.Delay(20);
                }
                catch (SocketException e)
                {
                    refused = e.SocketErrorCode;
                    break;
                }
            }

            Assert.Equal(SocketError.ConnectionRefused, refused);
            Assert.False(stopping.IsCompleted, "the stop must wait for the request in flight");
            release.SetResult(true);
            using HttpResponseMessage response = await inFlight.WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("finished", await response.Content.ReadAsStringAsync());
            await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            release.TrySetResult(true);
            await server.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task A_body_over_MaxRequestBodySize_gets_413()
    {
        await using WebServer server = await Start(
            app => app.MapPost("/upload", async (HttpContext context) =>
            {
                using var sink = new MemoryStream();
                await context.Request.Body.CopyToAsync(sink);
                return sink.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }),
            kestrel: k =>
            {
                k.Limits.MaxRequestBodySize = 1000;
                k.Listen(IPAddress.Loopback, 0);
            });
        using HttpClient client = server.Client();
        using HttpResponseMessage small = await client.PostAsync("/upload", new ByteArrayContent(new byte[1000]));
        Assert.Equal("1000", await small.Content.ReadAsStringAsync());
        using HttpResponseMessage large = await client.PostAsync("/upload", new ByteArrayContent(new byte[5000]));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, large.StatusCode);
    }

    [SkippableFact]
    public async Task Kestrels_header_timeout_closes_a_silent_connection()
    {
        await using WebServer server = await Start(
            app => app.MapGet("/", () => "hi"),
            kestrel: k =>
            {
                k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(2);
                k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(2);
                k.Listen(IPAddress.Loopback, 0);
            });

        // One connection says nothing; the other starts a request and stops mid-headers.
        using Socket silent = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
        using Socket partial = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
        partial.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n"));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        byte[] silentEnd = silent.ReceiveToEnd();
        byte[] partialEnd = partial.ReceiveToEnd();
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), $"closed after {watch.Elapsed}");
        Assert.Empty(silentEnd);

        // Kestrel answers a request whose headers timed out with 408 before closing (or just closes).
        string partialText = Encoding.ASCII.GetString(partialEnd);
        Assert.True(partialText.Length == 0 || partialText.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), partialText);
    }

    [SkippableFact]
    public async Task IPv6_loopback_is_served()
    {
        Skip.IfNot(Socket.OSSupportsIPv6, "no IPv6 on this machine");
        try
        {
            using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        }
        catch (SocketException e)
        {
            Skip.If(true, "cannot bind ::1 here: " + e.SocketErrorCode);
        }

        await using WebServer server = await Start(
            app => app.MapGet("/who", (HttpContext c) => c.Connection.RemoteIpAddress!.ToString()),
            kestrel: k => k.Listen(IPAddress.IPv6Loopback, 0));
        Assert.Equal($"http://[::1]:{server.Port}", server.Addresses[0]);
        using HttpClient client = server.Client();
        Assert.Equal("::1", await client.GetStringAsync("/who"));
    }

    [SkippableFact]
    public async Task ListenAnyIP_takes_IPv4_and_IPv6_clients()
    {
        Skip.IfNot(Socket.OSSupportsIPv6, "no IPv6 on this machine");

        // Kestrel binds [::] (dual mode) for ListenAnyIP, and falls back to 0.0.0.0 only if that fails.
        await using WebServer server = await Start(
            app => app.MapGet("/who", (HttpContext c) => c.Connection.RemoteIpAddress!.ToString()),
            kestrel: k => k.ListenAnyIP(0));
        Assert.StartsWith("http://[::]:", server.Addresses[0], StringComparison.Ordinal);
        using var v4 = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}") };
        Assert.Equal("::ffff:127.0.0.1", await v4.GetStringAsync("/who"));
        using HttpClient v6 = server.Client();
        Assert.Equal("::1", await v6.GetStringAsync("/who"));
    }

    [SkippableFact]
    public async Task Binding_an_address_in_use_fails_clearly()
    {
        await using WebServer first = await Start(app => app.MapGet("/", () => "first"));
        int port = first.Port;

        // Kestrel turns the transport's AddressInUseException into an IOException that names the address.
        IOException e = await Assert.ThrowsAsync<IOException>(() => Start(app => { }, kestrel: k => k.Listen(IPAddress.Loopback, port)));
        Assert.IsType<AddressInUseException>(e.InnerException);
        Assert.Contains(port.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);

        using HttpClient client = first.Client();
        Assert.Equal("first", await client.GetStringAsync("/"));
    }

    [SkippableFact]
    public async Task Connection_features_describe_the_connection()
    {
        await using WebServer server = await Start(app => app.MapGet("/f", (HttpContext c) =>
        {
            var lifetime = c.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeFeature>();
            return $"{c.Connection.LocalIpAddress}:{c.Connection.LocalPort} {c.Connection.RemoteIpAddress} {c.Connection.Id.Length} {lifetime is not null}";
        }));
        using HttpClient client = server.Client();
        string[] parts = (await client.GetStringAsync("/f")).Split(' ');
        Assert.Equal($"127.0.0.1:{server.Port}", parts[0]);
        Assert.Equal("127.0.0.1", parts[1]);
        Assert.Equal("13", parts[2]);
    }

    [SkippableTheory]
    [InlineData(null)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task RunContinuationsOnLoop_decides_where_Kestrel_processes_requests(bool? onLoop)
    {
        await using WebServer server = await Start(
            app => app.MapGet("/thread", () => $"{Thread.CurrentThread.IsThreadPoolThread}|{Thread.CurrentThread.Name}"),
            transport: o =>
            {
                if (onLoop is { } value)
                {
                    o.RunContinuationsOnLoop = value;
                }
            });

        // Over one keep-alive connection: from the second request on, Kestrel resumes from a read that waited for the
        // request, on the scheduler the option picks (the first may run where Kestrel started the connection). The
        // client pauses before each request so that the read does wait: a request already in the pipe when Kestrel asks
        // for it is handled on the thread that asked (as with any pipe), which for the second one is the pool thread
        // that ran the first, and a fresh process's first request keeps that thread busy (JIT) long enough for a
        // client without a pause to win the race.
        using HttpClient client = server.Client();
        string[] seen = new string[5];
        for (int i = 0; i < seen.Length; i++)
        {
            if (i > 0)
            {
                await Task.Delay(200);
            }

            seen[i] = await client.GetStringAsync("/thread");
        }

        foreach (string thread in seen.Skip(1))
        {
            if (onLoop ?? false)
            {
                // One of the transport's loop threads ("EpollSharp Kestrel loop N"), not a pool thread.
                Assert.Matches("^False\\|EpollSharp Kestrel loop [0-9]+$", thread);
            }
            else
            {
                Assert.StartsWith("True|", thread, StringComparison.Ordinal);
            }
        }
    }

    [SkippableTheory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(1024)]
    public async Task Many_connections_ready_at_once_are_all_answered_whatever_MaxEventsPerWait(int maxEvents)
    {
        await using WebServer server = await Start(
            app => app.MapGet("/n/{i:int}", (int i) => $"<{i}>"),
            transport: o =>
            {
                o.LoopCount = 1;
                o.MaxEventsPerWait = maxEvents;
            });

        // 64 connections, each with a request written before any is read: one loop finds them all ready, and serves
        // them in passes of at most maxEvents sockets.
        const int count = 64;
        var sockets = new Socket[count];
        try
        {
            for (int i = 0; i < count; i++)
            {
                sockets[i] = WebKit.Connect(new IPEndPoint(IPAddress.Loopback, server.Port));
            }

            for (int i = 0; i < count; i++)
            {
                sockets[i].Send(Encoding.ASCII.GetBytes($"GET /n/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
            }

            for (int i = 0; i < count; i++)
            {
                string text = Encoding.ASCII.GetString(sockets[i].ReceiveToEnd());
                Assert.StartsWith("HTTP/1.1 200 OK", text, StringComparison.Ordinal);
                Assert.Contains($"\r\n<{i}>\r\n", text, StringComparison.Ordinal);
            }
        }
        finally
        {
            foreach (Socket? socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i <= haystack.Length - needle.Length; i++)
        {
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>A read-only stream of <see cref="WebKit.Pattern"/> bytes of a given length, with no known length (so sent chunked).</summary>
    private sealed class PatternStream(long length) : Stream
    {
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = (int)Math.Min(count, length - _position);
            for (int i = 0; i < n; i++)
            {
                buffer[offset + i] = WebKit.Pattern(_position + i);
            }

            _position += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

/// <summary>
/// Every case of <see cref="HttpTests"/> with the transport's loops on io_uring (its connections and listeners on the
/// completion path); skipped where io_uring cannot be set up (an old kernel, io_uring disabled, a seccomp profile).
/// </summary>
public class HttpTestsOnIoUring : HttpTests
{
    /// <inheritdoc/>
    protected override EventLoopBackend Backend => EventLoopBackend.IoUring;
}
