using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// The EchoServer sample in a child process whose descriptor limit is 256, flooded with 600 connections.
/// During the flood its CPU use must stay under 25 % of one core (a listener that spun on EMFILE would use 100 %),
/// and once the flood ends it must serve new clients by itself.
/// </summary>
[Collection(TimingSensitive.Name)]
public class DescriptorExhaustionTests
{
    private const int DescriptorLimit = 256;
    private const int FloodConnections = 600;
    private const double MaxCpuShare = 0.25;
    private const int SigTerm = 15;

    private readonly ITestOutputHelper _output;

    public DescriptorExhaustionTests(ITestOutputHelper output) => _output = output;

    /// <summary>--max-connections above the descriptor limit, so accept really fails with EMFILE.</summary>
    [SkippableFact]
    public async Task EMFILE_flood_does_not_spin_and_the_server_recovers()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs ulimit and /proc");
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --max-connections 100000 --idle-timeout 0", DescriptorLimit);
        await FloodAndRecover(server, "reason=DescriptorLimit");
    }

    /// <summary>The default connection limit keeps headroom below the descriptor limit: the listener pauses before EMFILE.</summary>
    [SkippableFact]
    public async Task Default_connection_limit_pauses_before_the_descriptor_limit()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs ulimit and /proc");
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --idle-timeout 0", DescriptorLimit);
        await FloodAndRecover(server, "reason=ConnectionLimit");
        Assert.DoesNotContain(server.Stderr, l => l.Contains("reason=DescriptorLimit", StringComparison.Ordinal));
    }

    /// <summary>The same on io_uring, where the listener accepts with a multishot accept (EMFILE ends it; it is armed again on retry).</summary>
    [SkippableFact]
    public async Task EMFILE_flood_on_IoUring_does_not_spin_and_the_server_recovers()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs ulimit and /proc");
        EpollSharp.Tests.Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --backend io_uring --max-connections 100000 --idle-timeout 0", DescriptorLimit);
        await FloodAndRecover(server, "reason=DescriptorLimit");
    }

    /// <summary>On io_uring, the default connection limit pauses the multishot accept before the descriptor limit.</summary>
    [SkippableFact]
    public async Task Default_connection_limit_on_IoUring_pauses_before_the_descriptor_limit()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs ulimit and /proc");
        EpollSharp.Tests.Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --backend io_uring --idle-timeout 0", DescriptorLimit);
        await FloodAndRecover(server, "reason=ConnectionLimit");
        Assert.DoesNotContain(server.Stderr, l => l.Contains("reason=DescriptorLimit", StringComparison.Ordinal));
    }

    private async Task FloodAndRecover(SampleProcess server, string expectedPause)
    {
        _output.WriteLine($"{server.ListeningLine}; descriptors open: {server.OpenDescriptors()}");
        var flood = new ConcurrentBag<Socket>();
        TimeSpan cpuBefore = server.CpuTime();
        var wall = Stopwatch.StartNew();
        int failed = 0;
        var connects = Enumerable.Range(0, FloodConnections).Select(async _ =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await socket.ConnectAsync(server.EndPoint, cts.Token);
                await socket.SendAsync(new byte[] { 1 }, SocketFlags.None);
                flood.Add(socket);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                Interlocked.Increment(ref failed);
                socket.Dispose();
            }
        }).ToArray();
        await Task.WhenAll(connects);

        // Hold the flood: the listen queue keeps connections the server cannot take, so its socket stays readable.
        await Task.Delay(TimeSpan.FromSeconds(3));
        TimeSpan cpu = server.CpuTime() - cpuBefore;
        double share = cpu.TotalSeconds / wall.Elapsed.TotalSeconds;
        int descriptors = server.OpenDescriptors();
        _output.WriteLine($"flood: {flood.Count} connected, {failed} failed; server CPU {cpu.TotalMilliseconds:F0} ms over {wall.Elapsed.TotalMilliseconds:F0} ms = {share:P1} of a core; {descriptors} descriptors open");
        Assert.False(server.Process.HasExited, "the server died during the flood: " + string.Join(" | ", server.Stderr));
        Assert.Contains(server.Stderr, l => l.StartsWith("accept paused: " + expectedPause, StringComparison.Ordinal));
        Assert.True(share < MaxCpuShare, $"server CPU {share:P1} of a core during the flood (bound {MaxCpuShare:P0})");

        // The flood ends: the server frees its descriptors and serves a new client by itself.
        foreach (Socket socket in flood)
        {
            socket.Dispose();
        }

        var recovery = Stopwatch.StartNew();
        byte[] data = SocketTestExtensions.Pattern(9, 1000);
        while (true)
        {
            try
            {
                using Socket client = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 3000);
                client.Send(data);
                Assert.Equal(data, client.ReceiveExactly(data.Length));
                break;
            }
            catch (Exception e) when ((e is SocketException or InvalidOperationException) && recovery.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(200);
            }
        }

        _output.WriteLine($"served a new client {recovery.ElapsedMilliseconds} ms after the flood ended");
        foreach (string line in server.Stderr.Take(6))
        {
            _output.WriteLine("server: " + line);
        }

        server.Signal(SigTerm);
        string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        _output.WriteLine(stats);
        Assert.True(server.Process.WaitForExit(20_000));
        Assert.Equal(0, server.Process.ExitCode);
        Assert.Contains(server.Stderr, l => l.StartsWith("accept resumed:", StringComparison.Ordinal));
        Assert.DoesNotContain(server.Stderr, l => l.StartsWith("error:", StringComparison.Ordinal));
    }
}
