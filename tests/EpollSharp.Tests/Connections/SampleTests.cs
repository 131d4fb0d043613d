using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>Runs the built samples as processes: port 0, echo, SIGTERM with data in flight, the stats line.</summary>
[Collection(TimingSensitive.Name)]
public class SampleTests
{
    private const int SigTerm = 15;
    private readonly ITestOutputHelper _output;

    public SampleTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData("EchoServer", "--port 0", "backend=epoll loops=1")]
    [InlineData("EchoServer", "--port 0 --loops 2 --trigger edge", "backend=epoll loops=2")]
    [InlineData("EchoServer", "--port 0 --loops 2 --accept-mode acceptor", "backend=epoll loops=2")]
    [InlineData("ThreadedEchoServer", "--port 0", "backend=threads loops=0")]
    public void Sample_echoes_and_shuts_down_gracefully_on_SIGTERM(string sample, string arguments, string expectedTail)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start(sample, arguments);
        _output.WriteLine(server.ListeningLine);
        Assert.StartsWith("listening on 127.0.0.1:", server.ListeningLine, StringComparison.Ordinal);
        Assert.EndsWith(expectedTail, server.ListeningLine, StringComparison.Ordinal);
        Assert.NotEqual(0, server.EndPoint.Port);

        // A client that echoes and closes.
        long expectedBytes = 0;
        using (Socket client = EchoServer.ConnectTo(server.EndPoint))
        {
            byte[] data = SocketTestExtensions.Pattern(5, 200_000);
            var sender = new Thread(() => client.Send(data));
            sender.Start();
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sender.Join();
            expectedBytes += data.Length;
        }

        // A client with data in flight when SIGTERM arrives: it gets everything back, then end of stream.
        using Socket late = EchoServer.ConnectTo(server.EndPoint);
        byte[] inFlight = SocketTestExtensions.Pattern(6, 40_000);
        late.Send(inFlight);
        Thread.Sleep(200);
        server.Signal(SigTerm);
        byte[] echoed = late.ReceiveToEnd();
        Assert.Equal(inFlight, echoed);
        expectedBytes += inFlight.Length;
        late.Dispose();

        string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
        _output.WriteLine(stats);
        Match match = Regex.Match(stats, @"^stats: connections=(\d+) bytes=(\d+) allocated=(\d+)$");
        Assert.True(match.Success, stats);
        Assert.Equal("2", match.Groups[1].Value);
        Assert.Equal(expectedBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), match.Groups[2].Value);
        Assert.True(long.Parse(match.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        Assert.Equal(0, server.Process.ExitCode);
        Assert.Empty(server.Stderr);
    }

    /// <summary>A second EchoServer process on the port a running one holds fails with address-in-use instead of sharing the traffic.</summary>
    [SkippableTheory]
    [InlineData("--loops 1")]
    [InlineData("--loops 2")]
    [InlineData("--loops 2 --accept-mode reuseport")]
    public void A_second_EchoServer_on_a_held_port_exits_with_address_in_use(string loops)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs Linux processes");
        using SampleProcess first = SampleProcess.Start("EchoServer", "--port 0 " + loops);
        using SampleProcess second = SampleProcess.Launch("EchoServer", $"--port {first.EndPoint.Port} {loops}");
        Assert.True(second.Process.WaitForExit(30_000), "the second server did not exit");
        second.Process.WaitForExit(); // and its output is read to the end
        Assert.Equal(1, second.Process.ExitCode);
        Assert.DoesNotContain(second.Stdout, l => l.StartsWith("listening on", StringComparison.Ordinal));
        Assert.Contains(second.Stderr, l => l.Contains($"cannot listen on 127.0.0.1:{first.EndPoint.Port}", StringComparison.Ordinal) && l.Contains("in use", StringComparison.OrdinalIgnoreCase));

        // The first one still serves.
        using Socket client = EchoServer.ConnectTo(first.EndPoint);
        client.Send(new byte[] { 9 });
        Assert.Equal(9, client.ReceiveExactly(1)[0]);
    }

    /// <summary>The echo server runs on the Generic Host: its settings come from the environment as the issue asks (<c>EchoServer__Port</c>).</summary>
    [SkippableFact]
    public void EchoServer_takes_its_settings_from_the_environment()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        int port = FreePort();
        var environment = new Dictionary<string, string> { ["EchoServer__Port"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture), ["EchoServer__Loops"] = "2" };
        using SampleProcess server = SampleProcess.Start("EchoServer", "", environment: environment);
        Assert.Equal($"listening on 127.0.0.1:{port} backend=epoll loops=2", server.ListeningLine);
        AssertEchoes(server, 11);
        server.Signal(SigTerm);
        Assert.StartsWith("stats: connections=1 bytes=1 ", server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20)), StringComparison.Ordinal);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        Assert.Equal(0, server.Process.ExitCode);
        Assert.Empty(server.Stderr);
    }

    /// <summary>appsettings.json (here from --contentRoot) is overridden by the environment, which a flag overrides in turn.</summary>
    [SkippableFact]
    public void EchoServer_flags_override_the_environment_which_overrides_appsettings()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        string folder = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "echoserver-settings-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(folder);
        try
        {
            int filePort = FreePort();
            System.IO.File.WriteAllText(System.IO.Path.Combine(folder, "appsettings.json"), $$"""
                { "EchoServer": { "Port": {{filePort}}, "Loops": 3, "Backend": "managed", "IdleTimeout": 0 } }
                """);
            var environment = new Dictionary<string, string> { ["EchoServer__Loops"] = "2" };
            using SampleProcess server = SampleProcess.Start("EchoServer", $"--contentRoot {folder} --port 0", environment: environment);
            _output.WriteLine(server.ListeningLine);
            Assert.Matches(@"^listening on 127\.0\.0\.1:\d+ backend=managed loops=2$", server.ListeningLine);
            Assert.NotEqual(filePort, server.EndPoint.Port);
            AssertEchoes(server, 12);
            server.Signal(SigTerm);
            server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
            Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
            Assert.Equal(0, server.Process.ExitCode);
        }
        finally
        {
            System.IO.Directory.Delete(folder, recursive: true);
        }
    }

    [SkippableFact]
    public void EchoServer_help_lists_every_option_with_its_configuration_key_and_environment_variable()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess help = SampleProcess.Launch("EchoServer", "--help");
        Assert.True(help.Process.WaitForExit(30_000), "the sample did not exit");
        help.Process.WaitForExit();
        Assert.Equal(0, help.Process.ExitCode);
        string text = string.Join("\n", help.Stdout);
        _output.WriteLine(text);
        foreach ((string flag, string key) in new[]
        {
            ("--host", "Host"), ("--port", "Port"), ("--backend", "Backend"), ("--loops", "Loops"), ("--trigger", "Trigger"),
            ("--accept-mode", "AcceptMode"), ("--max-connections", "MaxConnections"), ("--idle-timeout", "IdleTimeout"),
            ("--drain-timeout", "DrainTimeout"), ("--systemd", "Systemd"), ("--callback-budget", "CallbackBudget"),
        })
        {
            Assert.Contains(help.Stdout, l => l.TrimStart().StartsWith(flag + " ", StringComparison.Ordinal) && l.Contains("EchoServer:" + key + " ", StringComparison.Ordinal) && l.Contains("EchoServer__" + key + " ", StringComparison.Ordinal));
        }
    }

    [SkippableTheory]
    [InlineData("--port 70000", "--port (EchoServer:Port)")]
    [InlineData("--accept-mode sideways", "--accept-mode (EchoServer:AcceptMode)")]
    [InlineData("--loops many", "EchoServer:Loops")]
    [InlineData("--frobnicate 1", "Unknown option --frobnicate")]
    [InlineData("--port", "--port needs a value")]
    public void EchoServer_rejects_a_bad_option_naming_it(string arguments, string expected)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess server = SampleProcess.Launch("EchoServer", arguments);
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit();
        Assert.Equal(2, server.Process.ExitCode);
        Assert.Contains(server.Stderr, l => l.Contains(expected, StringComparison.Ordinal));
    }

    [SkippableFact]
    public void ThreadedEchoServer_serves_at_most_max_connections_and_the_next_once_one_ends()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start("ThreadedEchoServer", "--port 0 --max-connections 2");
        Assert.Equal("max-connections=2", server.WaitForLine(l => l.StartsWith("max-connections=", StringComparison.Ordinal), TimeSpan.FromSeconds(10)));

        using Socket first = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 5_000);
        using Socket second = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 5_000);
        AssertEchoes(first, 1);
        AssertEchoes(second, 2);

        // The third connects (the kernel's listen backlog takes it) but is not served while two are open.
        Socket third = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 5_000);
        third.Send(new byte[] { 3 });
        Assert.False(third.Poll(500_000, SelectMode.SelectRead), "a third connection was served over the cap of 2");

        // One ends: the third is accepted and its waiting byte is echoed.
        first.Shutdown(SocketShutdown.Send);
        Assert.Equal(0, first.Receive(new byte[1]));
        Assert.True(third.Poll(5_000_000, SelectMode.SelectRead), "the waiting connection was not served after one ended");
        var echoed = new byte[1];
        Assert.Equal(1, third.Receive(echoed));
        Assert.Equal(3, echoed[0]);
        third.Dispose();
        AssertEchoes(second, 4);

        server.Signal(SigTerm);
        string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
        Assert.StartsWith("stats: connections=3 ", stats, StringComparison.Ordinal);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        Assert.Equal(0, server.Process.ExitCode);
    }

    [SkippableTheory]
    [InlineData("--max-connections 0")]
    [InlineData("--max-connections -5")]
    [InlineData("--max-connections lots")]
    public void ThreadedEchoServer_rejects_a_bad_max_connections(string arguments)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess server = SampleProcess.Launch("ThreadedEchoServer", "--port 0 " + arguments);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        server.Process.WaitForExit(); // and its output has been read
        Assert.Equal(2, server.Process.ExitCode);
        Assert.Contains(server.Stderr, l => l.Contains("--max-connections", StringComparison.Ordinal));
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private static void AssertEchoes(SampleProcess server, byte value)
    {
        using Socket client = EchoServer.ConnectTo(server.EndPoint);
        AssertEchoes(client, value);
    }

    private static void AssertEchoes(Socket socket, byte value)
    {
        socket.Send(new[] { value });
        var buffer = new byte[1];
        Assert.Equal(1, socket.Receive(buffer));
        Assert.Equal(value, buffer[0]);
    }
}

/// <summary>Tests whose timing or CPU measurements must not compete with the other tests: they run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingSensitive
{
    public const string Name = "Connections: timing-sensitive";
}
