using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// io_uring's completion path sends a write of bytes the handler was handed from a provided receive buffer (an echo)
/// straight from that buffer when the backlog is empty, with no copy: the buffer is kept until the send completes, the
/// rest of a partial send is copied into the backlog, and whatever ends the connection gives the buffer back. Each test
/// checks the bytes end to end and that every provided buffer is back in the ring at the end.
/// </summary>
public class IoUringBorrowedSendTests
{
    private readonly ITestOutputHelper _output;

    public IoUringBorrowedSendTests(ITestOutputHelper output) => _output = output;

    private static EchoServer Server(ConnectionHandler handler, ListenerOptions? options = null) =>
        EchoServer.OnIoUringCompletions(handler, options);

    private static IoUringBackend Backend(EchoServer server) => (IoUringBackend)server.Loop.CompletionIo!;

    /// <summary>A client whose receive buffer is set small before it connects (so the server's sends fill it soon).</summary>
    private static Socket SmallWindowClient(EchoServer server)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)
        {
            NoDelay = true,
            ReceiveBufferSize = 4096,
            ReceiveTimeout = 10_000,
            SendTimeout = 10_000,
        };
        socket.Connect(server.EndPoint);
        return socket;
    }

    private static void WaitForEveryBufferBack(EchoServer server)
    {
        IoUringBackend backend = Backend(server);
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => backend.ReceiveBuffersInUse == 0 && backend.ReceiveBuffersKept == 0), "every provided buffer is back in the ring");
    }

    /// <summary>
    /// Echoed messages go out from the receive buffer: the connections' writes borrow it (most of them; a write while an
    /// earlier one is still in the backlog is copied behind it). With reads in 4 KiB pieces, a 16 KiB message is one
    /// borrowed piece and three copied ones, sent together (the borrowed bytes and a chunk in one message).
    /// </summary>
    [SkippableTheory]
    [InlineData(16 * 1024, 64)]
    [InlineData(16 * 1024, 4)]
    [InlineData(64, 16)]
    public void Echoes_are_sent_from_the_receive_buffer_byte_for_byte(int size, int readKiB)
    {
        const int Clients = 4;
        const int Messages = 200;
        var handler = new BorrowCountingEchoHandler();
        using var server = Server(handler, new ListenerOptions { Connection = { ReceiveBufferSize = readKiB * 1024 } });
        var clients = Enumerable.Range(0, Clients).Select(_ => server.Connect()).ToList();
        LoopHarness.WaitUntil(() => handler.Connected == Clients, "every client is accepted");
        for (int m = 0; m < Messages; m++)
        {
            for (int c = 0; c < Clients; c++)
            {
                clients[c].Send(SocketTestExtensions.Pattern((m * Clients) + c, size));
            }

            for (int c = 0; c < Clients; c++)
            {
                Assert.Equal(SocketTestExtensions.Pattern((m * Clients) + c, size), clients[c].ReceiveExactly(size));
            }
        }

        long[] borrowed = server.Harness.Invoke(() => handler.Connections.Select(handler.BorrowedBy).ToArray());
        _output.WriteLine($"borrowed writes per connection: {string.Join(", ", borrowed)} of {Messages} messages");
        Assert.All(borrowed, b => Assert.InRange(b, Messages / 2, long.MaxValue));
        clients.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        WaitForEveryBufferBack(server);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A borrowed send that the socket takes only part of (the peer reads slowly): the rest is copied into the backlog at
    /// its front, the buffer given back at once, and the bytes arrive in order, before those written after it, one of
    /// them posted from another thread (a direct <c>Write</c> from another thread is refused).
    /// </summary>
    [SkippableFact]
    public void A_partial_send_from_the_receive_buffer_goes_on_from_the_backlog_in_order()
    {
        var handler = new EchoHandler();
        using var server = Server(handler, new ListenerOptions { Connection = { SocketSendBufferSize = 4096, ReceiveBufferSize = 64 * 1024, HighWatermark = 1024 * 1024, LowWatermark = 1024 } });
        using Socket client = SmallWindowClient(server);
        LoopHarness.WaitUntil(() => handler.Connected == 1, "the client is accepted");
        Connection connection = handler.Connections.Single();
        byte[] first = SocketTestExtensions.Pattern(1, 60 * 1024);
        client.Send(first);

        // The echo is stuck in the backlog (the client does not read). With 64 KiB buffers the first piece borrowed is
        // larger than the socket takes, so its send was partial; with 4 KiB buffers (EPOLLSHARP_IO_URING_INCREMENTAL=0)
        // it may have gone whole, and the pieces behind it were copied. Either way no provided buffer stays kept.
        bool incremental = Backend(server).IncrementalBuffers;
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.BytesReceived == first.Length && connection.BufferedBytes > 0 && (connection.LoopPartialBorrowedSends > 0 || !incremental)), "the echo is stuck behind a partial borrowed send");
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => Backend(server).ReceiveBuffersKept == 0), "no provided buffer is kept while the echo waits for the peer");
        Assert.Throws<InvalidOperationException>(() => connection.Write(new byte[] { 1 }));
        byte[] posted = SocketTestExtensions.Pattern(2, 20 * 1024);
        Assert.True(server.Harness.Invoke(() => connection.Write(posted)));
        (long borrowedWrites, long partial, long buffered) = server.Harness.Invoke(() => (connection.LoopBorrowedWrites, connection.LoopPartialBorrowedSends, connection.BufferedBytes));
        _output.WriteLine($"borrowed writes {borrowedWrites}, partial borrowed sends {partial}, buffered {buffered:N0}, incremental buffers {incremental}");
        Assert.InRange(borrowedWrites, 1, long.MaxValue);
        byte[] last = SocketTestExtensions.Pattern(3, 10 * 1024);
        client.Send(last);

        byte[] expected = first.Concat(posted).Concat(last).ToArray();
        byte[] received = client.ReceiveExactly(expected.Length);
        Assert.True(expected.AsSpan().SequenceEqual(received), "the bytes differ or are out of order");
        client.Shutdown(SocketShutdown.Send);
        Assert.Empty(client.ReceiveToEnd());
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection ends");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Closes.Single().Reason);
        WaitForEveryBufferBack(server);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// Peers that reset while the echo of their message is being sent from the receive buffer (in the kernel, partial, or
    /// in the backlog, whichever the timing): each connection ends as reset, and every buffer comes back.
    /// </summary>
    [SkippableFact]
    public void A_peer_reset_while_a_borrowed_send_is_in_flight_gives_the_buffer_back()
    {
        const int Clients = 20;
        var handler = new BorrowCountingEchoHandler();
        using var server = Server(handler, new ListenerOptions { Connection = { SocketSendBufferSize = 4096, ReceiveBufferSize = 64 * 1024 } });
        for (int i = 0; i < Clients; i++)
        {
            Socket client = SmallWindowClient(server);
            LoopHarness.WaitUntil(() => handler.Connected == i + 1, "the client is accepted");
            client.Send(SocketTestExtensions.Pattern(i, 48 * 1024));
            if (i % 2 == 0)
            {
                // Half of them once the echo started.
                LoopHarness.WaitUntil(() => server.Harness.Invoke(() => handler.Connections.Count == i + 1 && handler.BorrowedBy(handler.Connections.Last()) > 0), "the echo borrowed the receive buffer");
            }

            client.LingerState = new LingerOption(true, 0);
            client.Dispose();
        }

        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection ends");
        foreach ((ConnectionCloseReason reason, SocketError _) in handler.Closes)
        {
            Assert.True(reason is ConnectionCloseReason.Reset or ConnectionCloseReason.BrokenPipe or ConnectionCloseReason.Completed, reason.ToString());
        }

        long borrowed = server.Harness.Invoke(() => handler.Connections.Sum(handler.BorrowedBy));
        _output.WriteLine($"borrowed writes {borrowed}; closes: {string.Join(", ", handler.Closes.Select(c => c.Reason))}");
        Assert.InRange(borrowed, Clients / 2, long.MaxValue);
        WaitForEveryBufferBack(server);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A connection that writes the echo and closes gracefully in the same callback: the borrowed bytes go out, then the
    /// FIN, and the buffer comes back.
    /// </summary>
    [SkippableFact]
    public void A_close_right_after_a_borrowed_write_sends_the_bytes_then_the_FIN()
    {
        var handler = new EchoThenClose();
        using var server = Server(handler, new ListenerOptions { Connection = { ReceiveBufferSize = 64 * 1024 } });
        for (int i = 0; i < 8; i++)
        {
            using Socket client = server.Connect();
            byte[] message = SocketTestExtensions.Pattern(i, 16 * 1024);
            client.Send(message);
            byte[] received = client.ReceiveToEnd();
            Assert.True(message.AsSpan().StartsWith(received) && received.Length > 0, "the echo differs");
            Assert.Equal(handler.FirstPieces.ElementAt(i), received.Length);
        }

        Assert.InRange(handler.Borrowed, 1, 8);
        WaitForEveryBufferBack(server);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A paused connection's held pieces, delivered once it resumes, are echoed from the buffer they are held in; the
    /// bytes arrive in order and the buffers come back.
    /// </summary>
    [SkippableFact]
    public void Held_pieces_of_a_paused_connection_are_echoed_from_their_buffer()
    {
        var handler = new EchoPauseAtFirst();
        using var server = Server(handler, new ListenerOptions { Connection = { ReceiveBufferSize = 1024 } });
        using Socket client = server.Connect();
        byte[] message = SocketTestExtensions.Pattern(5, 8 * 1024);
        client.Send(message);
        byte[] head = client.ReceiveExactly(1024);
        Assert.True(message.AsSpan(0, 1024).SequenceEqual(head), "the first piece differs");
        Connection connection = handler.Connections.Single();
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.BufferedBytes == 0 && !connection.ReceiveArmed), "the first piece's send completed and the receive ended");
        (long held, long borrowedBefore) = server.Harness.Invoke(() => (connection.HeldBytes, connection.LoopBorrowedWrites));
        _output.WriteLine($"held {held:N0} bytes while paused; borrowed writes {borrowedBefore}");
        server.Harness.Invoke(() => connection.ResumeReceiving());
        byte[] rest = client.ReceiveExactly(message.Length - 1024);
        Assert.True(message.AsSpan(1024).SequenceEqual(rest), "the rest differs");
        long borrowed = server.Harness.Invoke(() => connection.LoopBorrowedWrites);
        Assert.InRange(borrowedBefore, 1, 1);
        if (held > 0)
        {
            // The first held piece went out from its buffer.
            Assert.InRange(borrowed, 2, long.MaxValue);
        }

        client.Dispose();
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection ends");
        WaitForEveryBufferBack(server);
        server.AssertNoLoopErrors();
    }

    /// <summary>Echoes the first bytes, then closes gracefully; remembers how many bytes it echoed per connection.</summary>
    private sealed class EchoThenClose : ConnectionHandler
    {
        public ConcurrentQueue<int> FirstPieces { get; } = new();

        public int Borrowed;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.BytesSent == 0 && connection.BufferedBytes == 0 && !connection.IsWriteClosed)
            {
                long before = connection.LoopBorrowedWrites;
                Assert.True(connection.Write(data));
                Borrowed += (int)(connection.LoopBorrowedWrites - before);
                FirstPieces.Enqueue(data.Length);
                connection.Close(TimeSpan.FromSeconds(10));
            }
        }
    }

    /// <summary>Echoes every piece, and pauses receiving after echoing the first one.</summary>
    private sealed class EchoPauseAtFirst : BorrowCountingEchoHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            base.OnReceived(connection, data);
            if (connection.BytesReceived == data.Length)
            {
                connection.PauseReceiving();
            }
        }
    }

    /// <summary>
    /// Echoes, and counts per connection the echoes that borrowed the receive buffer: the loop counts borrowed writes (no
    /// connection carries a count), so a rise across one connection's write is that connection's.
    /// </summary>
    private class BorrowCountingEchoHandler : EchoHandler
    {
        private readonly ConcurrentDictionary<Connection, long> _borrowed = new();

        /// <summary>Echoes of <paramref name="connection"/> sent from the receive buffer.</summary>
        public long BorrowedBy(Connection connection) => _borrowed.TryGetValue(connection, out long n) ? n : 0;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            long before = connection.LoopBorrowedWrites;
            base.OnReceived(connection, data);
            long borrowed = connection.LoopBorrowedWrites - before;
            if (borrowed > 0)
            {
                _borrowed.AddOrUpdate(connection, borrowed, (_, n) => n + borrowed);
            }
        }
    }
}
