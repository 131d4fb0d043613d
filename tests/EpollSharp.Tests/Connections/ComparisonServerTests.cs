using System.IO;
using System.Net.Security;
using System.Security.Authentication;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// The comparison servers of tests/comparison/run --shapes, as processes: samples/KestrelEchoServer (Kestrel, sockets
/// transport, a connection-middleware echo), samples/InBoxEchoServer --tls (SslStream over NetworkStream) and
/// samples/EchoServer --pipe-continuations pool. Each echoes byte for byte, ends in order and counts what it echoed.
/// </summary>
[Collection(TimingSensitive.Name)]
public class ComparisonServerTests
{
    private const int SigTerm = 15;
    private const string Password = "bench-Pfx-1";
    private readonly ITestOutputHelper _output;

    public ComparisonServerTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Kestrel_echo_server_echoes_byte_for_byte_and_drains_on_SIGTERM()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start("KestrelEchoServer", "--port 0");
        _output.WriteLine(server.ListeningLine);
        Assert.Matches(@"^listening on 127\.0\.0\.1:\d+ backend=sockets loops=1$", server.ListeningLine);
        Assert.NotEqual(0, server.EndPoint.Port);

        long expectedBytes = 0;
        using (Socket client = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 30_000))
        {
            byte[] data = SocketTestExtensions.Pattern(11, 300_000);
            var sender = new Thread(() => client.Send(data));
            sender.Start();
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sender.Join();
            expectedBytes += data.Length;

            // The peer's FIN: the echo ends and Kestrel closes its side.
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        // Data in flight when SIGTERM arrives: all of it comes back, then end of stream.
        using Socket late = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 30_000);
        byte[] inFlight = SocketTestExtensions.Pattern(12, 40_000);
        late.Send(inFlight);
        Assert.Equal(inFlight, late.ReceiveExactly(inFlight.Length));
        server.Signal(SigTerm);
        Assert.Empty(late.ReceiveToEnd());
        expectedBytes += inFlight.Length;

        AssertStats(server, connections: 2, expectedBytes);
    }

    [SkippableFact]
    public void InBox_echo_server_with_tls_gives_an_SslStream_client_1_MiB_back_byte_for_byte()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using var pfx = new EchoServerApiTests.TemporaryPfx(Password);
        using SampleProcess server = SampleProcess.Start("InBoxEchoServer", $"--port 0 --tls {pfx.Path} --tls-password {Password}");
        _output.WriteLine(server.ListeningLine);
        Assert.Matches(@"^listening on 127\.0\.0\.1:\d+ backend=inbox-async loops=0 tls=on$", server.ListeningLine);

        byte[] data = SocketTestExtensions.Pattern(13, 1024 * 1024);
        EchoServerApiTests.EchoOverTls(server.EndPoint, pfx.Thumbprint, data, _output, finishWithFin: false);

        server.Signal(SigTerm);
        AssertStats(server, connections: 1, data.Length);
    }

    [SkippableTheory]
    [InlineData("--tls-password wrong-one", "cannot be loaded as PKCS#12")]
    [InlineData("", "cannot be loaded as PKCS#12")]
    [InlineData("--missing", "does not exist")]
    public void InBox_echo_server_refuses_a_bad_tls_file_with_a_clear_message(string passwordArguments, string expected)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using var pfx = new EchoServerApiTests.TemporaryPfx(Password);
        string path = passwordArguments == "--missing" ? pfx.Path + ".missing" : pfx.Path;
        string extra = passwordArguments == "--missing" ? "--tls-password " + Password : passwordArguments;
        using SampleProcess server = SampleProcess.Launch("InBoxEchoServer", $"--port 0 --tls {path} {extra}");
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit();
        string stderr = string.Join("\n", server.Stderr);
        _output.WriteLine(stderr);
        Assert.Equal(2, server.Process.ExitCode);
        Assert.Contains($"--tls: '{path}' ", stderr, StringComparison.Ordinal);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(server.Stdout, l => l.StartsWith("listening on", StringComparison.Ordinal));
    }

    [SkippableTheory]
    [InlineData("pipe")]
    [InlineData("stream")]
    public void EchoServer_with_pipe_continuations_on_the_pool_echoes_and_drains(string api)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start("EchoServer", $"--port 0 --backend epoll --api {api} --pipe-continuations pool");
        _output.WriteLine(server.ListeningLine);
        Assert.EndsWith($"backend=epoll loops=1 api={api} continuations=pool", server.ListeningLine, StringComparison.Ordinal);

        byte[] data = SocketTestExtensions.Pattern(14, 500_000);
        using (Socket client = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 30_000))
        {
            var sender = new Thread(() => client.Send(data));
            sender.Start();
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sender.Join();
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        server.Signal(SigTerm);
        AssertStats(server, connections: 1, data.Length);
    }

    [SkippableTheory]
    [InlineData("--api callback --pipe-continuations pool", "--pipe-continuations pool (EchoServer:PipeContinuations) needs --api pipe or --api stream")]
    [InlineData("--pipe-continuations pool", "--pipe-continuations pool (EchoServer:PipeContinuations) needs --api pipe or --api stream")]
    [InlineData("--api pipe --pipe-continuations threads", "--pipe-continuations (EchoServer:PipeContinuations): 'threads' is not one of loop, pool.")]
    public void EchoServer_refuses_bad_pipe_continuations_naming_the_flag(string arguments, string expected)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess server = SampleProcess.Launch("EchoServer", "--port 0 " + arguments);
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit();
        string stderr = string.Join("\n", server.Stderr);
        _output.WriteLine(stderr);
        Assert.Equal(2, server.Process.ExitCode);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
    }

    private void AssertStats(SampleProcess server, int connections, long bytes)
    {
        string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        _output.WriteLine(stats);
        Match match = Regex.Match(stats, @"^stats: connections=(\d+) bytes=(\d+) allocated=(\d+)$");
        Assert.True(match.Success, stats);
        Assert.Equal(connections.ToString(System.Globalization.CultureInfo.InvariantCulture), match.Groups[1].Value);
        Assert.Equal(bytes.ToString(System.Globalization.CultureInfo.InvariantCulture), match.Groups[2].Value);
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit();
        Assert.Equal(0, server.Process.ExitCode);
        Assert.Empty(server.Stderr);
    }
}
