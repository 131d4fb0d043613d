using System.Buffers;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The pipes' allocation per message, apart from <see cref="PipeConnectionTests"/> so that it runs with no other test in
/// parallel: its process-wide figure counts every thread of the test host.
/// </summary>
[Collection(TimingSensitive.Name)]
public class PipeAllocationTests
{
    private readonly ITestOutputHelper _output;

    public PipeAllocationTests(ITestOutputHelper output) => _output = output;

    /// <summary>Every backend, with the application's continuations on the pool and on the loop, through the pipes and through the stream view.</summary>
    public static IEnumerable<object[]> BackendsModesAndViews()
    {
        foreach (object[] mode in PipeConnectionTests.BackendsAndModes())
        {
            yield return new object[] { mode[0], mode[1], false };
            yield return new object[] { mode[0], mode[1], true };
        }
    }

    /// <summary>
    /// What the stream view may allocate per echoed message on the loop thread, with the application there. The library's
    /// .NET builds allocate nothing per message (a read that waits completes through the stream itself); its
    /// netstandard2.0 build does not override Stream.ReadAsync(Memory) and WriteAsync(ReadOnlyMemory), which that
    /// Stream lacks, so .NET's fall back to the array overloads' tasks: 128 B per echo measured on net8.0.
    /// </summary>
#if EPOLLSHARP_NETSTANDARD2_0
    private const double StreamBytesPerMessage = 200;
#else
    private const double StreamBytesPerMessage = 0.1;
#endif

    /// <summary>Echoes through the stream view until the peer's end of stream.</summary>
    private static async Task StreamEcho(PipeConnection connection)
    {
        await using Stream stream = connection.AsStream();
        var buffer = new byte[4096];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            await stream.WriteAsync(buffer.AsMemory(0, n));
        }
    }

    /// <summary>
    /// Steady-state echo of 64-byte messages through the pipes allocates nothing per message with the application on the
    /// loop (every continuation there; measured on the loop thread, and process-wide). With thread-pool continuations
    /// the process-wide figure is reported. Through the stream view (<paramref name="stream"/>) the same holds on the
    /// library's .NET builds; its netstandard2.0 build allocates per message (see <see cref="StreamBytesPerMessage"/>).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsModesAndViews))]
    public void Small_message_echo_through_pipes_allocates_nothing_per_message(EventLoopBackend backend, bool onLoop, bool stream) =>
        EchoAllocatesNothingPerMessage(backend, onLoop, stream, size: 64, messages: 10_000);

    /// <summary>
    /// The same with 16 KiB messages through the pipes: with the application on the loop, the loop receives into the
    /// block the input reader lends and the reader keeps it (a new block rented for the next read), which allocates
    /// nothing per message either.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Large_message_echo_on_the_loop_allocates_nothing_per_message(EventLoopBackend backend) =>
        EchoAllocatesNothingPerMessage(backend, onLoop: true, stream: false, size: 16 * 1024, messages: 2_000);

    private void EchoAllocatesNothingPerMessage(EventLoopBackend backend, bool onLoop, bool stream, int size, int messages)
    {
#if DEBUG
        // The stream view's ReadAsync and WriteAsync are async methods, whose state machines a Debug build compiles as
        // classes: one per call. The claim is the Release build's (README: dotnet test EpollSharp.sln -c Release).
        Skip.If(stream, "the stream view allocates nothing per message in Release builds only (run the tests with -c Release)");
#endif
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(PipeConnectionTests.Tracked(started, stream ? StreamEcho : PipeConnectionTests.Echo), PipeConnectionTests.Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        byte[] message = SocketTestExtensions.Pattern(1, size);
        byte[] echo = new byte[size];
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

        RoundTrips(messages / 5);

        // Three windows: the loop thread's figure is exact; the process-wide one also counts whatever else the test host
        // does meanwhile (threads of earlier tests winding down), which only adds, so the smallest window is the figure.
        long loopTotal = 0;
        long processMin = long.MaxValue;
        for (int window = 0; window < 3; window++)
        {
            long loopBefore = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
            long processBefore = GC.GetTotalAllocatedBytes(precise: true);
            var sw = Stopwatch.StartNew();
            RoundTrips(messages);
            sw.Stop();
            long processAfter = GC.GetTotalAllocatedBytes(precise: true);
            long loopAfter = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
            Assert.Equal(message, echo);
            long loop = loopAfter - loopBefore;
            long process = processAfter - processBefore;
            loopTotal += loop;
            processMin = Math.Min(processMin, process);
            _output.WriteLine(
                $"{backend} onLoop={onLoop} stream={stream}: {messages:N0} echoes in {sw.ElapsedMilliseconds} ms ({sw.Elapsed.TotalMilliseconds * 1000 / messages:F1} µs round trip); " +
                $"loop thread {loop:N0} B ({loop / (double)messages:F3} per message), process {process:N0} B ({process / (double)messages:F3} per message)");
        }

        // (with the application elsewhere, the stream's allocations are not the loop thread's)
        double loopBound = stream && onLoop ? 1024 + StreamBytesPerMessage * 3 * messages : 1024;
        Assert.True(loopTotal < loopBound, $"{loopTotal} bytes allocated on the loop thread for {3 * messages:N0} messages (bound {loopBound:N0})");
        if (onLoop)
        {
            // The whole process: the loop, the application, and this test's client.
            double processBound = 16 * 1024 + (stream ? StreamBytesPerMessage * messages : 0);
            Assert.True(processMin < processBound, $"{processMin} bytes allocated in the process for {messages:N0} messages (the least of three windows; bound {processBound:N0})");
        }

        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The pipes' default pool (PipeConnectionOptions.MemoryPool left null): its 4 KiB and 16 KiB blocks come back for reuse, so once
    /// a loop has had many segments out at once (many connections with a message in flight), renting as many again
    /// allocates nothing. ArrayPool&lt;byte&gt;.Shared, the pipes' pool before, keeps only a few arrays per core: renting 256
    /// 4 KiB arrays at once from it allocates most of them anew every time, about 200 bytes per message in an echo over 64
    /// connections. A request above the large block is refused (the pipes take those from ArrayPool&lt;byte&gt;.Shared themselves),
    /// and a block disposed twice goes back once.
    /// </summary>
    [Fact]
    public void The_pipes_default_pool_lends_its_blocks_again_without_allocating()
    {
        PipeBlockPool pool = PipeBlockPool.Instance;
        Assert.Equal(16 * 1024, pool.MaxBufferSize);
        var owners = new System.Buffers.IMemoryOwner<byte>[300];
        void RentAllAndReturn()
        {
            for (int i = 0; i < owners.Length; i++)
            {
                owners[i] = pool.Rent(i % 3 == 0 ? 4096 : i % 3 == 1 ? -1 : 16 * 1024);
            }

            // (no Assert in the measured loops: xUnit's comparers allocate)
            for (int i = 0; i < owners.Length; i++)
            {
                if (owners[i].Memory.Length != (i % 3 == 2 ? 16 * 1024 : 4096))
                {
                    throw new Xunit.Sdk.XunitException($"block {i} has {owners[i].Memory.Length} bytes");
                }
            }

            for (int i = 0; i < owners.Length; i++)
            {
                owners[i].Dispose();
            }
        }

        RentAllAndReturn();
        long before = GC.GetAllocatedBytesForCurrentThread();
        RentAllAndReturn();
        RentAllAndReturn();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated == 0, $"{allocated} bytes allocated renting {owners.Length} blocks at once, twice");

        var shared = new byte[owners.Length][];
        long sharedBefore = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < shared.Length; i++)
        {
            shared[i] = ArrayPool<byte>.Shared.Rent(4096);
        }

        foreach (byte[] array in shared)
        {
            ArrayPool<byte>.Shared.Return(array);
        }

        _output.WriteLine($"for comparison, ArrayPool<byte>.Shared: {GC.GetAllocatedBytesForCurrentThread() - sharedBefore:N0} bytes allocated renting {shared.Length} arrays of 4 KiB at once");

        Assert.Equal(16 * 1024, pool.Rent(4097).Memory.Length); // (not returned: the GC takes it)
        ArgumentOutOfRangeException tooLarge = Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(16 * 1024 + 1));
        Assert.Equal("minBufferSize", tooLarge.ParamName);

        System.Buffers.IMemoryOwner<byte> one = pool.Rent();
        System.Buffers.IMemoryOwner<byte> other = pool.Rent();
        one.Dispose();
        one.Dispose();
        Assert.Same(one, pool.Rent());
        Assert.NotSame(one, pool.Rent()); // the second dispose did not put it back twice
        other.Dispose();
    }
}
