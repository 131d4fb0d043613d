using System;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using System.Threading;
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
}

/// <summary>Tests whose timing or CPU measurements must not compete with the other tests: they run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingSensitive
{
    public const string Name = "Connections: timing-sensitive";
}
