using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>The io_uring completion path of the connection layer: in use, correct, and holding no buffer when idle.</summary>
public class IoUringCompletionTests
{
    private readonly ITestOutputHelper _output;

    public IoUringCompletionTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Debug_backpressure()
    {
        var handler = new EchoHandler();
        var options = new ListenerOptions { Connection = { HighWatermark = 64 * 1024, LowWatermark = 16 * 1024, ReceiveBufferSize = 16 * 1024 } };
        using var server = new EchoServer(EventLoopBackend.IoUring, handler, options);
        using Socket client = server.Connect(receiveTimeoutMs: 20_000);
        client.ReceiveBufferSize = 64 * 1024;
        client.SendBufferSize = 64 * 1024;
        byte[] payload = SocketTestExtensions.Pattern(7, 32 * 1024 * 1024);
        long sent = 0;
        Exception? failure = null;
        var senderThread = new Thread(() =>
        {
            try
            {
                for (int offset = 0; offset < payload.Length; offset += 16 * 1024)
                {
                    client.Send(payload, offset, Math.Min(16 * 1024, payload.Length - offset), SocketFlags.None);
                    Interlocked.Add(ref sent, Math.Min(16 * 1024, payload.Length - offset));
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        senderThread.Start();
        var q = typeof(Connection).GetField("_sendQueue", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        for (int i = 0; i < 30; i++)
        {
            Thread.Sleep(50);
            if (handler.Connections.IsEmpty)
            {
                continue;
            }

            Connection c = handler.Connections.Single();
            string line = server.Harness.Invoke(() => $"sent {Interlocked.Read(ref sent)} buffered {c.BufferedBytes} q {(q.GetValue(c) as dynamic)?.Length} wp {c.IsWritePaused} rp {c.IsReceivingPaused} sends {c.CompletionSends} recvs {c.CompletionReceives} closed {c.CloseReason}");
            _output.WriteLine(line);
        }

        Connection connection = handler.Connections.Single();
        _output.WriteLine($"sent {Interlocked.Read(ref sent)} failure {failure?.Message} closed {connection.IsClosed} reason {connection.CloseReason} {connection.SocketError} buffered {connection.BufferedBytes} rp {connection.IsReceivingPaused} wp {connection.IsWritePaused} recvs {connection.CompletionReceives} sends {connection.CompletionSends} paused {handler.WritePausedCount} resumed {handler.WriteResumedCount} max {handler.MaxBuffered} errors {string.Join(" | ", server.Errors)}");
    }
}
