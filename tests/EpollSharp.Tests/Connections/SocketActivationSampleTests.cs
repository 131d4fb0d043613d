using System.IO;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// Socket activation end to end: systemd's own launcher, <c>systemd-socket-activate</c> (a program nobody here wrote),
/// opens the listening socket, waits for the first client, and only then starts the echo sample with <c>--systemd</c>,
/// passing the socket as descriptor 3 with <c>LISTEN_FDS</c>/<c>LISTEN_PID</c>/<c>LISTEN_FDNAMES</c>.
/// </summary>
[Collection(TimingSensitive.Name)]
public class SocketActivationSampleTests
{
    private const int SigTerm = 15;
    private readonly ITestOutputHelper _output;

    public SocketActivationSampleTests(ITestOutputHelper output) => _output = output;

    private static string Launcher()
    {
        string? launcher = ProcessTools.FindOnPath("systemd-socket-activate");
        Skip.If(launcher is null, "systemd-socket-activate (Debian package systemd) is not installed; .ci/run installs it");
        return launcher!;
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    /// <summary>Connects as soon as the launcher listens (retrying until then).</summary>
    private static Socket ConnectWhenListening(EndPoint endPoint, SampleProcess server)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var client = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified) { ReceiveTimeout = 30_000 };
            try
            {
                client.Connect(endPoint);
                return client;
            }
            catch (SocketException) when (sw.Elapsed < TimeSpan.FromSeconds(20) && !server.Process.HasExited)
            {
                client.Dispose();
                Thread.Sleep(50);
            }
        }
    }

    [SkippableTheory]
    [InlineData("tcp", "--loops 1")]
    [InlineData("tcp", "--loops 2")]
    [InlineData("unix", "--loops 1")]
    public void The_echo_sample_serves_the_socket_systemd_passed_including_the_client_that_started_it(string kind, string loops)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "socket activation is Linux only");
        string launcher = Launcher();
        string path = UnixSocketTests.TempSocketPath();
        string address = kind == "tcp" ? "127.0.0.1:" + FreePort() : path;
        EndPoint endPoint = kind == "tcp" ? IPEndPoint.Parse(address) : new UnixDomainSocketEndPoint(path);
        try
        {
            using SampleProcess server = SampleProcess.Launch("EchoServer", "--systemd " + loops, launcher: new[] { launcher, "-l", address, "--fdname=echo" });

            // The launcher starts the server only when this first client arrives; the client waits in the queue meanwhile.
            using (Socket first = ConnectWhenListening(endPoint, server))
            {
                byte[] data = SocketTestExtensions.Pattern(1, 100_000);
                first.Send(data);
                Assert.Equal(data, first.ReceiveExactly(data.Length));
            }

            string ready = server.WaitForLine(l => l.StartsWith("listening on ", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            _output.WriteLine(ready);
            Assert.StartsWith("listening on " + (kind == "tcp" ? address : path) + " backend=epoll", ready, StringComparison.Ordinal);

            using (Socket second = ConnectWhenListening(endPoint, server))
            {
                byte[] data = SocketTestExtensions.Pattern(2, 3_000);
                second.Send(data);
                Assert.Equal(data, second.ReceiveExactly(data.Length));
            }

            server.Signal(SigTerm);
            string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
            _output.WriteLine(stats);
            Assert.Matches(new Regex(@"^stats: connections=2 bytes=103000 allocated=\d+$"), stats);
            Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
            Assert.Equal(0, server.Process.ExitCode);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [SkippableFact]
    public void Without_passed_sockets_the_sample_says_so_and_exits_with_1()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess server = SampleProcess.Launch("EchoServer", "--systemd");
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit(); // and its output is read to the end
        Assert.Equal(1, server.Process.ExitCode);
        Assert.Contains(server.Stderr, l => l.Contains("cannot listen on the sockets passed by socket activation", StringComparison.Ordinal) && l.Contains("LISTEN_FDS", StringComparison.Ordinal));
    }
}
