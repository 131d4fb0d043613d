using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>The echo sample on the io_uring backend: <c>--backend io_uring</c> is parsed, named in the ready line, and serves.</summary>
[Collection(TimingSensitive.Name)]
public class IoUringSampleTests
{
    private const int SigTerm = 15;
    private readonly ITestOutputHelper _output;

    public IoUringSampleTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData("--port 0 --backend io_uring", "backend=io_uring loops=1")]
    [InlineData("--port 0 --backend=io_uring --loops 2 --trigger edge", "backend=io_uring loops=2")]
    [InlineData("--port 0 --backend iouring --api pipe", "backend=io_uring loops=1 api=pipe")]
    public void The_echo_sample_serves_on_io_uring(string arguments, string expectedTail)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using SampleProcess server = SampleProcess.Start("EchoServer", arguments);
        _output.WriteLine(server.ListeningLine);
        Assert.EndsWith(expectedTail, server.ListeningLine, StringComparison.Ordinal);

        using (Socket client = EchoServer.ConnectTo(server.EndPoint))
        {
            byte[] data = SocketTestExtensions.Pattern(7, 300_000);
            var sender = new Thread(() => client.Send(data));
            sender.Start();
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sender.Join();
        }

        server.Signal(SigTerm);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        Assert.Equal(0, server.Process.ExitCode);
    }
}
