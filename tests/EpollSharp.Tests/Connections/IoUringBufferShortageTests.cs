using System.Diagnostics;
using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// io_uring's completion path when the provided buffer ring runs dry: a multishot receive then ends with <c>ENOBUFS</c>
/// while the socket still has data. Armed again at once it would end at once again, as fast as the loop turns; instead it
/// waits in the backend (parked) until a buffer comes back, and every byte still arrives, in order. The tests empty the
/// ring on purpose (the backend's test hook takes buffers out of it as if receives held them).
/// </summary>
public class IoUringBufferShortageTests
{
    private const int ENOBUFS = 105;

    private readonly ITestOutputHelper _output;

    public IoUringBufferShortageTests(ITestOutputHelper output) => _output = output;

    /// <summary>An io_uring echo server on the completion path whose ring keeps only <paramref name="keep"/> buffers.</summary>
    private static (EchoServer Server, IoUringBackend Backend) Server(ConnectionHandler handler, int keep)
    {
        var server = EchoServer.OnIoUringCompletions(handler);
        var backend = (IoUringBackend)server.Loop.CompletionIo!;
        server.Harness.Invoke(() => backend.WithholdReceiveBuffers(keep));
        return (server, backend);
    }

    private static Connection Only(EchoServer server, EchoHandler handler)
    {
        LoopHarness.WaitUntil(() => handler.Connected == 1, "the client is accepted");
        return handler.Connections.Single();
    }

    [SkippableFact]
    public void A_receive_with_no_buffer_to_fill_waits_for_one_instead_of_ending_again_and_again()
    {
        var handler = new EchoHandler();
        var (server, backend) = Server(handler, keep: 0);
        using (server)
        {
            using Socket client = server.Connect(receiveTimeoutMs: 30_000);
            Connection connection = Only(server, handler);
            byte[] payload = SocketTestExtensions.Pattern(41, 200_000);
            client.Send(payload);

            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.ReceiveParked), "the receive is parked for want of buffers");
            int ends = server.Harness.Invoke(() => connection.CompletionReceiveEnds);
            Assert.Equal(-ENOBUFS, server.Harness.Invoke(() => connection.LastCompletionReceiveEnd));

            // Nothing can change while no buffer comes back: a receive armed again at every turn of the loop would end
            // thousands of times in this window.
            Thread.Sleep(300);
            Assert.Equal(ends, server.Harness.Invoke(() => connection.CompletionReceiveEnds));
            Assert.Equal(1, server.Harness.Invoke(() => backend.ParkedReceives));
            Assert.Equal(0L, handler.BytesEchoed);

            server.Harness.Invoke(() => backend.ReturnWithheldReceiveBuffers());
            Assert.True(payload.AsSpan().SequenceEqual(client.ReceiveExactly(payload.Length)), "the echo differs");
            Assert.Equal(0, server.Harness.Invoke(() => backend.ParkedReceives));
            _output.WriteLine($"receive ends: {ends} before the buffers came back, {server.Harness.Invoke(() => connection.CompletionReceiveEnds)} in all");
            server.AssertNoLoopErrors();
        }
    }

    [SkippableFact]
    public void With_one_buffer_for_the_whole_loop_large_messages_still_echo_byte_for_byte()
    {
        var handler = new EchoHandler();
        var (server, backend) = Server(handler, keep: 1);
        using (server)
        {
            var clients = Enumerable.Range(0, 4).Select(_ => server.Connect(receiveTimeoutMs: 60_000)).ToList();
            LoopHarness.WaitUntil(() => handler.Connected == clients.Count, "every client is accepted");
            var payloads = clients.Select((_, i) => SocketTestExtensions.Pattern(50 + i, 512 * 1024)).ToList();
            var senders = clients.Select((c, i) => Task.Run(() => c.Send(payloads[i]))).ToList();
            for (int i = 0; i < clients.Count; i++)
            {
                Assert.True(payloads[i].AsSpan().SequenceEqual(clients[i].ReceiveExactly(payloads[i].Length)), $"client {i}'s echo differs");
            }

            Task.WaitAll(senders.ToArray());
            var ends = server.Harness.Invoke(() => handler.Connections.Select(c => c.CompletionReceiveEnds).ToList());
            _output.WriteLine($"receive ends per connection: {string.Join(", ", ends)}");
            Assert.Equal(0, server.Harness.Invoke(() => backend.ParkedReceives));
            // Every buffer but the withheld ones went back to the ring (the kernel may still be filling the one left).
            int withheld = (backend.IncrementalBuffers ? IoUringBackend.LargeBufferCount : IoUringBackend.BufferCount) - 1;
            Assert.InRange(server.Harness.Invoke(() => backend.ReceiveBuffersOut), withheld, withheld + (backend.IncrementalBuffers ? 1 : 0));
            server.AssertNoLoopErrors();
        }
    }

    [SkippableFact]
    public void A_parked_receive_paused_then_resumed_delivers_everything_once_buffers_return()
    {
        var handler = new EchoHandler();
        var (server, backend) = Server(handler, keep: 0);
        using (server)
        {
            using Socket client = server.Connect(receiveTimeoutMs: 30_000);
            Connection connection = Only(server, handler);
            byte[] payload = SocketTestExtensions.Pattern(43, 100_000);
            client.Send(payload);
            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.ReceiveParked), "the receive is parked");

            // Pausing cancels the parked receive: its end (ECANCELED) comes from the backend, as the kernel's would.
            server.Harness.Invoke(() => connection.PauseReceiving());
            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => !connection.ReceiveArmed), "the parked receive ends");
            Assert.Equal(-Interop.Errno.ECANCELED, server.Harness.Invoke(() => connection.LastCompletionReceiveEnd));
            Assert.Equal(0, server.Harness.Invoke(() => backend.ParkedReceives));

            server.Harness.Invoke(() => backend.ReturnWithheldReceiveBuffers());
            server.Harness.Invoke(() => connection.ResumeReceiving());
            Assert.True(payload.AsSpan().SequenceEqual(client.ReceiveExactly(payload.Length)), "the echo differs");
            server.AssertNoLoopErrors();
        }
    }

    [SkippableFact]
    public void A_connection_closed_while_its_receive_is_parked_goes_away_and_the_next_one_is_served()
    {
        var handler = new EchoHandler();
        var (server, backend) = Server(handler, keep: 0);
        using (server)
        {
            using Socket first = server.Connect(receiveTimeoutMs: 30_000);
            Connection connection = Only(server, handler);
            first.Send(SocketTestExtensions.Pattern(44, 10_000));
            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.ReceiveParked), "the receive is parked");

            server.Harness.Invoke(() => connection.Abort());
            LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection closes");
            Assert.Equal(0, server.Harness.Invoke(() => backend.ParkedReceives));

            server.Harness.Invoke(() => backend.ReturnWithheldReceiveBuffers());
            using Socket second = server.Connect(receiveTimeoutMs: 30_000);
            byte[] payload = SocketTestExtensions.Pattern(45, 50_000);
            second.Send(payload);
            Assert.True(payload.AsSpan().SequenceEqual(second.ReceiveExactly(payload.Length)), "the second connection's echo differs");
            server.AssertNoLoopErrors();
        }
    }

    [SkippableFact]
    public void A_loop_disposed_while_a_receive_is_parked_stops_at_once()
    {
        var handler = new EchoHandler();
        var (server, backend) = Server(handler, keep: 0);
        Socket client = server.Connect(receiveTimeoutMs: 30_000);
        try
        {
            Connection connection = Only(server, handler);
            client.Send(SocketTestExtensions.Pattern(46, 10_000));
            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.ReceiveParked), "the receive is parked");
            var watch = Stopwatch.StartNew();
            server.Dispose();
            _output.WriteLine($"disposed in {watch.ElapsedMilliseconds} ms");

            // The backend waits up to a second for operations still in the kernel; a parked receive is not one, and
            // nothing is left counted in flight.
            Assert.Equal(0, backend.ParkedReceives);
            Assert.Equal(0, backend.ChannelOperations);
        }
        finally
        {
            client.Dispose();
            server.Dispose();
        }
    }
}
