using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace EpollSharp.Hosting.Tests;

/// <summary>An EpollSharp server in a Generic Host built in-process: start, options from every configuration source, validation, stop.</summary>
public class HostingTests
{
    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task Serves_an_echo_on_port_0_and_reports_its_endpoint(EventLoopBackend backend)
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(options =>
        {
            options.Endpoints.Add("127.0.0.1:0");
            options.Backend = backend;
            options.Loops = 2;
        });
        using IHost host = builder.Build();
        await host.StartAsync();

        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        Assert.Same(host.Services.GetRequiredService<TestEchoHandler>(), server.Handler);
        Assert.Equal(backend, server.Group.Backend);
        Assert.Equal(2, server.Group.Loops.Count);
        IPEndPoint endPoint = Assert.IsType<IPEndPoint>(Assert.Single(server.LocalEndPoints));
        Assert.Equal(IPAddress.Loopback, endPoint.Address);
        Assert.NotEqual(0, endPoint.Port);
        Assert.Contains(log.Lines, l => l.Contains($"Listening on 127.0.0.1:{endPoint.Port} (backend {backend}, 2 loops)", StringComparison.Ordinal));

        using (Socket client = HostKit.Connect(endPoint))
        {
            byte[] data = HostKit.Pattern(1, 100_000);
            var sender = Task.Run(() => client.Send(data));
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            await sender;
        }

        await host.StopAsync();
        Assert.Equal(1, server.Group.AcceptedCount);
        Assert.Equal(100_000, ((TestEchoHandler)server.Handler).BytesEchoed);
        Assert.True(server.Group.Completion.IsCompletedSuccessfully);
        Assert.Contains(log.Lines, l => l.Contains("Stopped after 1 connections", StringComparison.Ordinal));

        // The library's own logs go through the host's logger factory.
        Assert.Contains(log.Lines, l => l.StartsWith("Information EpollSharp.Connections:", StringComparison.Ordinal) && l.Contains($"127.0.0.1:{endPoint.Port}", StringComparison.Ordinal));
    }

    [SkippableFact]
    public async Task A_callback_past_the_budget_is_logged_through_the_host()
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        builder.Services.AddEpollSharpServer(_ => new SleepyHandler());
        builder.Services.Configure<EpollSharpServerOptions>(options =>
        {
            options.Endpoints.Add("127.0.0.1:0");
            options.Loops = 1;
            options.CallbackBudget = TimeSpan.FromMilliseconds(20);
        });
        using IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        using (Socket client = HostKit.Connect(server.LocalEndPoints[0]))
        {
            client.Send(new byte[] { 3 });
            Assert.Equal(3, client.ReceiveExactly(1)[0]);
        }

        var sw = Stopwatch.StartNew();
        while (!log.Lines.Any(l => l.StartsWith("Warning EpollSharp.EventLoop: A loop callback ran", StringComparison.Ordinal)) && sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(10);
        }

        Assert.Contains(log.Lines, l => l.StartsWith("Warning EpollSharp.EventLoop: A loop callback ran", StringComparison.Ordinal) && l.Contains("budget of 20 ms", StringComparison.Ordinal));
        await host.StopAsync();
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task Options_come_from_in_memory_configuration(EventLoopBackend backend)
    {
        HostApplicationBuilder builder = HostKit.Builder(out _);
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["EpollSharp:Endpoints:0"] = "127.0.0.1:0",
            ["EpollSharp:Endpoints:1"] = "[::1]:0",
            ["EpollSharp:Backend"] = backend.ToString().ToLowerInvariant(),
            ["EpollSharp:Loops"] = "3",
            ["EpollSharp:AcceptMode"] = "SingleAcceptor",
            ["EpollSharp:TriggerMode"] = "Edge",
            ["EpollSharp:MaxConnections"] = "7",
            ["EpollSharp:IdleTimeout"] = "00:00:00",
            ["EpollSharp:DrainTimeout"] = "00:00:01.5",
            ["EpollSharp:CallbackBudget"] = "00:00:00.250",
        });
        builder.Services.AddEpollSharpServer<TestEchoHandler>(builder.Configuration.GetSection(EpollSharpServerOptions.SectionName));
        using IHost host = builder.Build();

        EpollSharpServerOptions options = host.Services.GetRequiredService<IOptions<EpollSharpServerOptions>>().Value;
        Assert.Equal(new[] { "127.0.0.1:0", "[::1]:0" }, options.Endpoints);
        Assert.Equal(backend, options.Backend);
        Assert.Equal(3, options.Loops);
        Assert.Equal(GroupAcceptMode.SingleAcceptor, options.AcceptMode);
        Assert.Equal(TriggerMode.Edge, options.TriggerMode);
        Assert.Equal(7, options.MaxConnections);
        Assert.Equal(TimeSpan.Zero, options.IdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(1.5), options.DrainTimeout);
        Assert.Equal(TimeSpan.FromMilliseconds(250), options.CallbackBudget);

        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        Assert.Equal(3, server.Group.Loops.Count);
        Assert.Equal(backend, server.Group.Backend);
        Assert.Equal(2, server.Listeners.Count); // one acceptor per endpoint
        Assert.Equal(7, server.Listeners[0].MaxConnections);
        Assert.Equal(2, server.LocalEndPoints.Count);
        foreach (EndPoint endPoint in server.LocalEndPoints)
        {
            using Socket client = HostKit.Connect(endPoint);
            client.Send(new byte[] { 1, 2, 3 });
            Assert.Equal(new byte[] { 1, 2, 3 }, client.ReceiveExactly(3));
        }

        await host.StopAsync();
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task Options_come_from_environment_variables(EventLoopBackend backend)
    {
        // A section of the test's own, so that the variables meet no other host built by tests running at the same time.
        string section = "EnvTest" + Guid.NewGuid().ToString("N");
        var variables = new Dictionary<string, string>
        {
            [section + "__Endpoints__0"] = "127.0.0.1:0",
            [section + "__Backend"] = backend.ToString(),
            [section + "__Loops"] = "2",
        };
        try
        {
            foreach (KeyValuePair<string, string> variable in variables)
            {
                Environment.SetEnvironmentVariable(variable.Key, variable.Value);
            }

            HostApplicationBuilder builder = HostKit.Builder(out _);
            builder.Services.AddEpollSharpServer<TestEchoHandler>(builder.Configuration.GetSection(section));
            using IHost host = builder.Build();
            await host.StartAsync();
            EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
            Assert.Equal(2, server.Group.Loops.Count);
            Assert.Equal(backend, server.Group.Backend);
            using (Socket client = HostKit.Connect(server.LocalEndPoints[0]))
            {
                client.Send(new byte[] { 42 });
                Assert.Equal(42, client.ReceiveExactly(1)[0]);
            }

            await host.StopAsync();
        }
        finally
        {
            foreach (string name in variables.Keys)
            {
                Environment.SetEnvironmentVariable(name, null);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task Options_come_from_the_command_line_over_appsettings_style_configuration(EventLoopBackend backend)
    {
        HostApplicationBuilder builder = HostKit.Builder(out _, "--EpollSharp:Endpoints:0=127.0.0.1:0", "--EpollSharp:Loops", "2", $"--EpollSharp:Backend={backend}");

        // A source added before the command line (as appsettings.json is) loses to it.
        builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Memory.MemoryConfigurationSource
        {
            InitialData = new Dictionary<string, string?> { ["EpollSharp:Loops"] = "5", ["EpollSharp:MaxConnections"] = "9" },
        });
        builder.Services.AddEpollSharpServer<TestEchoHandler>(builder.Configuration.GetSection("EpollSharp"));
        using IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        Assert.Equal(2, server.Group.Loops.Count);
        Assert.Equal(backend, server.Group.Backend);
        Assert.Equal(9, server.Listeners[0].MaxConnections);
        using (Socket client = HostKit.Connect(server.LocalEndPoints[0]))
        {
            client.Send(new byte[] { 7 });
            Assert.Equal(7, client.ReceiveExactly(1)[0]);
        }

        await host.StopAsync();
    }

    [SkippableTheory]
    [InlineData("Loops", "-1", "EpollSharp:Loops is '-1'")]
    [InlineData("Loops", "5000", "EpollSharp:Loops is '5000'")]
    [InlineData("Endpoints:0", "nowhere", "EpollSharp:Endpoints:0 'nowhere' is not an IP address and port")]
    [InlineData("Endpoints:0", "127.0.0.1", "EpollSharp:Endpoints:0 '127.0.0.1' is not an IP address and port")]
    [InlineData("MaxConnections", "-3", "EpollSharp:MaxConnections is '-3'")]
    [InlineData("IdleTimeout", "-00:00:05", "EpollSharp:IdleTimeout is '-00:00:05'")]
    [InlineData("DrainTimeout", "-00:00:01", "EpollSharp:DrainTimeout is '-00:00:01'")]
    [InlineData("CallbackBudget", "02:00:00", "EpollSharp:CallbackBudget is '02:00:00'")]
    [InlineData("Backend", "7", "EpollSharp:Backend is '7'")]
    [InlineData("Endpoints", null, "EpollSharp:Endpoints is empty")]
    public async Task Invalid_options_fail_the_start_with_a_message_naming_the_option(string key, string? value, string expected)
    {
        HostApplicationBuilder builder = HostKit.Builder(out _);
        var settings = new Dictionary<string, string?> { ["EpollSharp:Endpoints:0"] = "127.0.0.1:0" };
        if (value is null)
        {
            settings.Remove("EpollSharp:" + key + ":0");
        }
        else
        {
            settings["EpollSharp:" + key] = value;
        }

        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(builder.Configuration.GetSection("EpollSharp"));
        using IHost host = builder.Build();
        OptionsValidationException e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Null(host.Services.GetRequiredService<EpollSharpServer>().LocalEndPoints.FirstOrDefault());
    }

    [SkippableFact]
    public async Task A_value_of_the_wrong_type_fails_the_start_naming_its_key()
    {
        HostApplicationBuilder builder = HostKit.Builder(out _, "--EpollSharp:Loops=many", "--EpollSharp:Endpoints:0=127.0.0.1:0");
        builder.Services.AddEpollSharpServer<TestEchoHandler>(builder.Configuration.GetSection("EpollSharp"));
        using IHost host = builder.Build();
        InvalidOperationException e = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("EpollSharp:Loops", e.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Options_set_in_code_without_a_section_are_named_by_their_property()
    {
        HostApplicationBuilder builder = HostKit.Builder(out _);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(options => options.Loops = -2);
        using IHost host = builder.Build();
        OptionsValidationException e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("EpollSharpServerOptions.Loops is '-2'", e.Message, StringComparison.Ordinal);
        Assert.Contains("EpollSharpServerOptions.Endpoints is empty", e.Message, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task An_address_in_use_fails_StartAsync_and_leaves_nothing_listening(EventLoopBackend backend)
    {
        HostKit.SkipUnlessLinux();
        using var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        held.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        held.Listen();
        int port = ((IPEndPoint)held.LocalEndPoint!).Port;

        HostApplicationBuilder builder = HostKit.Builder(out _);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(options =>
        {
            options.Backend = backend;
            options.Loops = 2;
            options.Endpoints.Add("127.0.0.1:0");
            options.Endpoints.Add($"127.0.0.1:{port}");
        });
        using IHost host = builder.Build();
        System.IO.IOException e = await Assert.ThrowsAsync<System.IO.IOException>(() => host.StartAsync());
        Assert.StartsWith($"Cannot listen on 127.0.0.1:{port}: ", e.Message, StringComparison.Ordinal);
        Assert.Equal(SocketError.AddressAlreadyInUse, Assert.IsType<SocketException>(e.InnerException).SocketErrorCode);
        Assert.Empty(host.Services.GetRequiredService<EpollSharpServer>().Listeners);
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task StopAsync_drains_in_flight_connections_gracefully(EventLoopBackend backend)
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        var handler = new SlowEchoHandler(50_000);
        builder.Services.AddEpollSharpServer(_ => handler);
        builder.Services.Configure<EpollSharpServerOptions>(options =>
        {
            options.Backend = backend;
            options.Endpoints.Add("127.0.0.1:0");
            options.DrainTimeout = TimeSpan.FromSeconds(20);
        });
        using IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        using Socket client = HostKit.Connect(server.LocalEndPoints[0]);
        byte[] data = HostKit.Pattern(2, 50_000);
        client.Send(data);
        Assert.True(handler.AllReceived.Wait(10_000));

        // Stop while the handler still holds what it received: it is echoed before the connection closes.
        Task stop = host.StopAsync();
        byte[] echoed = client.ReceiveToEnd(out bool reset);
        Assert.False(reset);
        Assert.Equal(data, echoed);

        // The server's graceful close waits for our side to close too.
        client.Shutdown(SocketShutdown.Send);
        var sw = Stopwatch.StartNew();
        await stop.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"the stop took {sw.Elapsed} after the connection closed");
        Assert.Contains(log.Lines, l => l.Contains("Stopping: draining 1 connections", StringComparison.Ordinal));
        Assert.DoesNotContain(log.Lines, l => l.Contains("shutdown timeout", StringComparison.Ordinal));
    }

    /// <summary>A started host whose server holds one echoed connection that never closes by itself (a <see cref="StubbornHandler"/>).</summary>
    private static async Task<(IHost Host, EpollSharpServer Server, Socket Client, MemoryLog Log)> StartWithStubbornConnection(EventLoopBackend backend, TimeSpan shutdownTimeout, TimeSpan drainTimeout)
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        builder.Services.Configure<HostOptions>(options => options.ShutdownTimeout = shutdownTimeout);
        builder.Services.AddEpollSharpServer(_ => new StubbornHandler());
        builder.Services.Configure<EpollSharpServerOptions>(options =>
        {
            options.Backend = backend;
            options.Endpoints.Add("127.0.0.1:0");
            options.DrainTimeout = drainTimeout;
        });
        IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        Socket client = HostKit.Connect(server.LocalEndPoints[0]);
        client.Send(new byte[] { 1 });
        Assert.Equal(1, client.ReceiveExactly(1)[0]);
        return (host, server, client, log);
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task A_connection_that_never_closes_is_reset_at_the_hosts_shutdown_timeout(EventLoopBackend backend)
    {
        (IHost host, EpollSharpServer server, Socket client, MemoryLog log) = await StartWithStubbornConnection(backend, shutdownTimeout: TimeSpan.FromSeconds(1), drainTimeout: TimeSpan.FromMinutes(5));
        using IHost disposeHost = host;
        using Socket disposeClient = client;

        var sw = Stopwatch.StartNew();
        await host.StopAsync().WaitAsync(TimeSpan.FromSeconds(20));
        TimeSpan took = sw.Elapsed;
        Assert.InRange(took, TimeSpan.FromSeconds(0.8), TimeSpan.FromSeconds(10));
        client.ReceiveToEnd(out bool reset);
        Assert.True(reset, "the connection was not reset");
        Assert.Contains(log.Lines, l => l.Contains("shutdown timeout has passed: resetting the 1 connections", StringComparison.Ordinal));
        Assert.Equal(0, server.Group.ConnectionCount);
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task The_drain_timeout_resets_a_connection_that_never_closes_before_the_hosts_deadline(EventLoopBackend backend)
    {
        (IHost host, EpollSharpServer server, Socket client, MemoryLog log) = await StartWithStubbornConnection(backend, shutdownTimeout: TimeSpan.FromSeconds(30), drainTimeout: TimeSpan.FromMilliseconds(300));
        using IHost disposeHost = host;
        using Socket disposeClient = client;

        var sw = Stopwatch.StartNew();
        await host.StopAsync().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.InRange(sw.Elapsed, TimeSpan.FromSeconds(0.2), TimeSpan.FromSeconds(10));
        client.ReceiveToEnd(out bool reset);
        Assert.True(reset, "the connection was not reset");
        Assert.DoesNotContain(log.Lines, l => l.Contains("shutdown timeout", StringComparison.Ordinal));
    }

    [SkippableTheory]
    [MemberData(nameof(HostKit.Backends), MemberType = typeof(HostKit))]
    public async Task A_unix_socket_endpoint_serves_and_its_file_goes_at_stop(EventLoopBackend backend)
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "epollsharp-hosting-" + Guid.NewGuid().ToString("N")[..12] + ".sock");
        HostApplicationBuilder builder = HostKit.Builder(out _);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(options =>
        {
            options.Backend = backend;
            options.Endpoints.Add("unix:" + path);
            options.ConfigureListener = listener => listener.UnixSocketMode = Convert.ToInt32("600", 8);
        });
        using IHost host = builder.Build();
        await host.StartAsync();
        Assert.True(System.IO.File.Exists(path));
        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(System.IO.UnixFileMode.UserRead | System.IO.UnixFileMode.UserWrite, System.IO.File.GetUnixFileMode(path));
        }
        using (Socket client = HostKit.Connect(new UnixDomainSocketEndPoint(path)))
        {
            client.Send(new byte[] { 5, 6 });
            Assert.Equal(new byte[] { 5, 6 }, client.ReceiveExactly(2));
        }

        await host.StopAsync();
        Assert.False(System.IO.File.Exists(path));
    }

    [SkippableFact]
    public async Task Socket_activation_without_passed_sockets_fails_the_start_saying_so()
    {
        HostKit.SkipUnlessLinux();
        Skip.If(Environment.GetEnvironmentVariable("LISTEN_FDS") is not null, "this test process was given sockets by socket activation");
        HostApplicationBuilder builder = HostKit.Builder(out _);
        builder.Services.AddEpollSharpServer<TestEchoHandler>(options => options.SocketActivation = true);
        using IHost host = builder.Build();
        InvalidOperationException e = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("no sockets were passed", e.Message, StringComparison.Ordinal);
        Assert.Contains("LISTEN_FDS", e.Message, StringComparison.Ordinal);
        Assert.Empty(host.Services.GetRequiredService<EpollSharpServer>().Listeners);
    }

    [SkippableFact]
    public async Task A_handler_that_throws_is_logged_and_the_server_goes_on()
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        builder.Services.AddEpollSharpServer(_ => new ThrowingHandler());
        builder.Services.Configure<EpollSharpServerOptions>(options => options.Endpoints.Add("127.0.0.1:0"));
        using IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        for (int i = 0; i < 2; i++)
        {
            using Socket client = HostKit.Connect(server.LocalEndPoints[0]);
            client.Send(new byte[] { 0 });
            client.ReceiveToEnd(out _);
        }

        // The connection is reset first, then the exception logged on the loop: wait for the second line.
        var sw = Stopwatch.StartNew();
        while (CountThrown(log) < 2 && sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(10);
        }

        Assert.Equal(2, CountThrown(log));
        Assert.False(host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping.IsCancellationRequested);
        await host.StopAsync();
        Assert.True(server.Group.Completion.IsCompletedSuccessfully);
    }

    [SkippableFact]
    public async Task With_StopOnUnhandledException_a_handler_that_throws_stops_the_application()
    {
        HostApplicationBuilder builder = HostKit.Builder(out MemoryLog log);
        builder.Services.AddEpollSharpServer(_ => new ThrowingHandler());
        builder.Services.Configure<EpollSharpServerOptions>(options =>
        {
            options.Endpoints.Add("127.0.0.1:0");
            options.Loops = 1;
            options.StopOnUnhandledException = true;
        });
        using IHost host = builder.Build();
        await host.StartAsync();
        EpollSharpServer server = host.Services.GetRequiredService<EpollSharpServer>();
        using (Socket client = HostKit.Connect(server.LocalEndPoints[0]))
        {
            client.Send(new byte[] { 0 });
            client.ReceiveToEnd(out _);
        }

        await host.WaitForShutdownAsync().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(server.Group.Completion.IsFaulted);
        Assert.Contains(log.Lines, l => l.StartsWith("Critical", StringComparison.Ordinal) && l.Contains("stopping the application", StringComparison.Ordinal) && l.Contains("boom", StringComparison.Ordinal));
    }

    [SkippableFact]
    public void A_second_server_in_the_same_services_is_refused()
    {
        var services = new ServiceCollection();
        services.AddEpollSharpServer<TestEchoHandler>(options => options.Endpoints.Add("127.0.0.1:0"));
        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => services.AddEpollSharpServer<TestEchoHandler>(options => options.Endpoints.Add("127.0.0.1:0")));
        Assert.Contains("added to these services already", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("127.0.0.1:8080", "127.0.0.1:8080")]
    [InlineData(" 0.0.0.0:0 ", "0.0.0.0:0")]
    [InlineData("[::]:8080", "[::]:8080")]
    [InlineData("[::1]:1", "[::1]:1")]
    [InlineData("unix:/run/echo.sock", "unix:/run/echo.sock")]
    [InlineData("unix:@echo", "unix:@echo")]
    public void Endpoints_parse_and_format_back(string text, string formatted)
    {
        Assert.True(EndpointParser.TryParse(text, out EndPoint? endPoint, out string? error), error);
        Assert.Equal(formatted, EndpointParser.Format(endPoint));
    }

    [Theory]
    [InlineData("")]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    [InlineData("[::1]")]
    [InlineData("localhost:80")]
    [InlineData("127.0.0.1:http")]
    [InlineData("127.0.0.1:70000")]
    [InlineData("unix:")]
    [InlineData("unix:@")]
    public void Endpoints_that_say_nothing_usable_are_refused(string text)
    {
        Assert.False(EndpointParser.TryParse(text, out _, out string? error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    private static int CountThrown(MemoryLog log) => log.Lines.Count(l => l.StartsWith("Error EpollSharp.EventLoop: A loop callback threw", StringComparison.Ordinal) && l.Contains("boom", StringComparison.Ordinal));

    /// <summary>Holds what it receives (one connection) until the shutdown is requested, then echoes it all and closes.</summary>
    private sealed class SlowEchoHandler : ConnectionHandler
    {
        private readonly List<byte> _held = new();
        private readonly int _expected;

        public SlowEchoHandler(int expected) => _expected = expected;

        public ManualResetEventSlim AllReceived { get; } = new();

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            _held.AddRange(data.ToArray());
            if (_held.Count >= _expected)
            {
                AllReceived.Set();
            }
        }

        public override void OnShutdownRequested(Connection connection)
        {
            // The in-flight work: written during the drain, then the graceful close sends it before the FIN.
            connection.Write(_held.ToArray());
            base.OnShutdownRequested(connection);
        }
    }

    /// <summary>Echoes, and ignores the request to shut down: its connections stay open until reset.</summary>
    private sealed class StubbornHandler : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);

        public override void OnShutdownRequested(Connection connection)
        {
        }
    }

    private sealed class SleepyHandler : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            Thread.Sleep(100);
            connection.Write(data);
        }
    }

    private sealed class ThrowingHandler : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => throw new InvalidOperationException("boom");
    }
}
