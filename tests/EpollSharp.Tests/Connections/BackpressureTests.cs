using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

public class BackpressureTests
{
    private const int HighWatermark = 64 * 1024;
    private const int LowWatermark = 16 * 1024;
    private const int ReceiveBufferSize = 16 * 1024;

    private readonly ITestOutputHelper _output;

    public BackpressureTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// A client sends 32 MiB and reads nothing (more than the loopback socket buffers hold, even autotuned). The echo server's backlog must stay under HighWatermark + one read
    /// (64 KiB + 16 KiB), it must stop reading (the client's send stalls), and everything must arrive once the client reads.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_client_that_stops_reading_is_bounded_by_the_watermark_and_resumes(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        var options = new ListenerOptions
        {
            Connection = { HighWatermark = HighWatermark, LowWatermark = LowWatermark, ReceiveBufferSize = ReceiveBufferSize },
        };
        using var server = new EchoServer(backend, handler, options);
        using Socket client = server.Connect(receiveTimeoutMs: 20_000);
        client.ReceiveBufferSize = 64 * 1024;
        client.SendBufferSize = 64 * 1024;
        byte[] payload = SocketTestExtensions.Pattern(7, 32 * 1024 * 1024);
        long sent = 0;
        var senderDone = new ManualResetEventSlim();
        var senderThread = new Thread(() =>
        {
            for (int offset = 0; offset < payload.Length; offset += 16 * 1024)
            {
                client.Send(payload, offset, Math.Min(16 * 1024, payload.Length - offset), SocketFlags.None);
                Interlocked.Add(ref sent, Math.Min(16 * 1024, payload.Length - offset));
            }

            senderDone.Set();
        }) { IsBackground = true };
        senderThread.Start();

        // Wait until the sender stalls: nothing more accepted for 300 ms.
        long last = -1;
        var sw = Stopwatch.StartNew();
        while (Interlocked.Read(ref sent) != last || last == 0)
        {
            last = Interlocked.Read(ref sent);
            Thread.Sleep(300);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), "the sender never stalled");
        }

        Assert.False(senderDone.IsSet, $"all {payload.Length:N0} bytes went through although the client reads nothing");
        Connection connection = handler.Connections.Single();
        (long buffered, bool writePaused, bool receivingPaused) = server.Harness.Invoke(() => (connection.BufferedBytes, connection.IsWritePaused, connection.IsReceivingPaused));
        _output.WriteLine($"stalled after the client sent {last:N0} bytes; server backlog {buffered:N0}, max seen {handler.MaxBuffered:N0}");
        Assert.True(writePaused);
        Assert.True(receivingPaused);
        Assert.InRange(buffered, HighWatermark, HighWatermark + ReceiveBufferSize);
        Assert.InRange(handler.MaxBuffered, HighWatermark, HighWatermark + ReceiveBufferSize);
        Assert.Equal(1, handler.WritePausedCount);

        // The client reads again: everything comes back, in order.
        byte[] echoed = client.ReceiveExactly(payload.Length);
        Assert.True(senderDone.Wait(TimeSpan.FromSeconds(20)));
        Assert.True(payload.AsSpan().SequenceEqual(echoed), "echo differs");
        Assert.True(handler.WriteResumedCount >= 1);
        Assert.InRange(handler.MaxBuffered, 0, HighWatermark + ReceiveBufferSize);
        Assert.False(connection.IsClosed);
        server.AssertNoLoopErrors();
    }

    /// <summary>A handler that ignores backpressure cannot grow the backlog past MaxBufferedBytes: the write is refused and the connection reset.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Past_MaxBufferedBytes_the_write_is_refused_and_the_connection_reset(EventLoopBackend backend)
    {
        var handler = new FloodHandler();
        var options = new ListenerOptions { Connection = { MaxBufferedBytes = 256 * 1024, HighWatermark = 64 * 1024 } };
        using var server = new EchoServer(backend, handler, options);
        using Socket client = server.Connect();
        client.ReceiveBufferSize = 16 * 1024;
        client.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => handler.Closed, "the connection is reset");
        Assert.Equal(ConnectionCloseReason.OutputLimitExceeded, handler.Reason);
        Assert.True(handler.Refused);
        Assert.InRange(handler.MaxBuffered, 1, 256 * 1024);
        var buffer = new byte[65536];
        Assert.Throws<SocketException>(() =>
        {
            while (client.Receive(buffer) > 0)
            {
            }
        });
        server.AssertNoLoopErrors();
    }

    /// <summary>Writes 64 KiB at a time, ignoring backpressure, until a write is refused.</summary>
    private sealed class FloodHandler : ConnectionHandler
    {
        public volatile bool Closed;
        public volatile bool Refused;
        public ConnectionCloseReason Reason;
        public long MaxBuffered;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            var chunk = new byte[64 * 1024];
            for (int i = 0; i < 1000; i++)
            {
                if (!connection.Write(chunk))
                {
                    Refused = true;
                    return;
                }

                MaxBuffered = Math.Max(MaxBuffered, connection.BufferedBytes);
            }
        }

        public override void OnWritePaused(Connection connection)
        {
            // Ignore backpressure on purpose.
        }

        public override void OnClosed(Connection connection)
        {
            Reason = connection.CloseReason;
            Closed = true;
        }
    }
}
