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
