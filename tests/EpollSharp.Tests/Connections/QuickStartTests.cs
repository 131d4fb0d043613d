namespace EpollSharp.Tests.Connections;

/// <summary>The README's example (samples/QuickStart) runs: it listens, echoes, and stops on SIGINT (Ctrl+C).</summary>
[Collection(TimingSensitive.Name)]
public class QuickStartTests
{
    private const int SigInt = 2;

    [SkippableFact]
    public void The_readme_example_echoes_and_stops_on_ctrl_c()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the test signals a Linux process");
        Skip.If(SampleProcess.IgnoredByThisProcess(SigInt),
            "SIGINT is ignored by the test host (started in the background by a shell without job control), so the sample inherits it ignored");
        using SampleProcess server = SampleProcess.Start("QuickStart", "0");
        Assert.EndsWith("backend=Epoll", server.ListeningLine, StringComparison.Ordinal);
        using (Socket client = EchoServer.ConnectTo(server.EndPoint))
        {
            byte[] data = SocketTestExtensions.Pattern(3, 100_000);
            client.Send(data);
            Assert.Equal(data, client.ReceiveExactly(data.Length));
        }

        server.Signal(SigInt);
        string last = server.WaitForLine(l => l.StartsWith("stopped after", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
        Assert.Equal("stopped after 1 connections", last);
        Assert.True(server.Process.WaitForExit(20_000));
        Assert.Equal(0, server.Process.ExitCode);
    }
}
