using System.Buffers;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// The pipes' allocation per message, apart from <see cref="PipeConnectionTests"/> so that it runs with no other test in
/// parallel: its process-wide figure counts every thread of the test host.
/// </summary>
[Collection(TimingSensitive.Name)]
public class PipeAllocationTests
{
    private readonly ITestOutputHelper _output;

    public PipeAllocationTests(ITestOutputHelper output) => _output = output;

    public static IEnumerable<object[]> BackendsAndModes() => PipeConnectionTests.BackendsAndModes();

    /// <summary>
    /// Steady-state echo of 64-byte messages through the pipes allocates nothing per message with the application on the
    /// loop (every continuation there; measured on the loop thread, and process-wide). With thread-pool continuations
    /// the process-wide figure is reported.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Small_message_echo_through_pipes_allocates_nothing_per_message(EventLoopBackend backend, bool onLoop)
    {
        const int Messages = 10_000;
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(PipeConnectionTests.Tracked(started, PipeConnectionTests.Echo), PipeConnectionTests.Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        byte[] message = SocketTestExtensions.Pattern(1, 64);
        byte[] echo = new byte[64];
        void RoundTrips(int count)
        {
            for (int i = 0; i < count; i++)
            {
                client.Send(message);
                int total = 0;
                while (total < echo.Length)
                {
                    total += client.Receive(echo, total, echo.Length - total, SocketFlags.None);
                }
            }
        }

        RoundTrips(2_000);

        // Three windows: the loop thread's figure is exact; the process-wide one also counts whatever else the test host
        // does meanwhile (threads of earlier tests winding down), which only adds, so the smallest window is the figure.
        long loopTotal = 0;
        long processMin = long.MaxValue;
        for (int window = 0; window < 3; window++)
        {
            long loopBefore = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
            long processBefore = GC.GetTotalAllocatedBytes(precise: true);
            var sw = Stopwatch.StartNew();
            RoundTrips(Messages);
            sw.Stop();
            long processAfter = GC.GetTotalAllocatedBytes(precise: true);
            long loopAfter = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
            Assert.Equal(message, echo);
            long loop = loopAfter - loopBefore;
            long process = processAfter - processBefore;
            loopTotal += loop;
            processMin = Math.Min(processMin, process);
            _output.WriteLine(
                $"{backend} onLoop={onLoop}: {Messages:N0} echoes in {sw.ElapsedMilliseconds} ms ({sw.Elapsed.TotalMilliseconds * 1000 / Messages:F1} µs round trip); " +
                $"loop thread {loop:N0} B ({loop / (double)Messages:F3} per message), process {process:N0} B ({process / (double)Messages:F3} per message)");
        }

        Assert.True(loopTotal < 1024, $"{loopTotal} bytes allocated on the loop thread for {3 * Messages:N0} messages");
        if (onLoop)
        {
            // The whole process: the loop, the application, and this test's client.
            Assert.True(processMin < 16 * 1024, $"{processMin} bytes allocated in the process for {Messages:N0} messages (the least of three windows)");
        }

        server.AssertNoLoopErrors();
    }
}
