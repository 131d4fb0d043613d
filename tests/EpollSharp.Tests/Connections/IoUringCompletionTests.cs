using System.Collections.Concurrent;
using System.Diagnostics;
using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// The connection layer on io_uring's completion path (multishot receive into a provided buffer ring, sends submitted
/// with the loop's wait): that it is in use, and correct under volume, resets, closes with pending output, descriptor
/// reuse and idleness. Each test switches the path on for its own loop.
/// </summary>
public class IoUringCompletionTests
{
    private readonly ITestOutputHelper _output;

    public IoUringCompletionTests(ITestOutputHelper output) => _output = output;

    private static EchoServer Server(ConnectionHandler handler, ListenerOptions? options = null) =>
        EchoServer.OnIoUringCompletions(handler, options);

    [SkippableFact]
    public void Echo_over_many_connections_goes_through_completions_with_no_readiness_registration()
    {
        const int Clients = 16;
        const int Messages = 200;
        var handler = new EchoHandler();
        using var server = Server(handler);
        var sockets = Enumerable.Range(0, Clients).Select(_ => server.Connect()).ToList();
        LoopHarness.WaitUntil(() => handler.Connected == Clients, "every client is accepted");
        byte[] message = SocketTestExtensions.Pattern(5, 64);
        for (int m = 0; m < Messages; m++)
        {
            foreach (Socket s in sockets)
            {
                s.Send(message);
            }

            foreach (Socket s in sockets)
            {
                Assert.Equal(message, s.ReceiveExactly(message.Length));
            }
        }

        var stats = server.Harness.Invoke(() => handler.Connections.Select(c => (c.UsesCompletions, c.CompletionReceives, c.CompletionSends)).ToList());
        int registrations = server.Harness.Invoke(() => server.Loop.RegistrationCount);
        _output.WriteLine($"registrations {registrations}; per connection receives/sends: {string.Join(", ", stats.Select(s => s.CompletionReceives + "/" + s.CompletionSends))}");
        Assert.All(stats, s => Assert.True(s.UsesCompletions));
        Assert.All(stats, s => Assert.InRange(s.CompletionReceives, Messages, long.MaxValue));
        Assert.All(stats, s => Assert.InRange(s.CompletionSends, 1, long.MaxValue));

        // Nothing is registered for readiness: the listener accepts with a multishot accept (but for the netstandard2.0
        // build, whose listeners accept through readiness), and the connections' bytes never go through readiness and
        // recv/send.
#if EPOLLSHARP_NETSTANDARD2_0
        Assert.Equal(1, registrations);
#else
        Assert.Equal(0, registrations);
#endif
        Assert.Equal((long)Clients * Messages * message.Length, handler.BytesEchoed);
        sockets.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public async Task Sixteen_MiB_each_way_arrive_byte_for_byte()
    {
        var handler = new EchoHandler();
        using var server = Server(handler);
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        byte[] payload = SocketTestExtensions.Pattern(11, 16 * 1024 * 1024);
        Task send = Task.Run(() =>
        {
            for (int offset = 0; offset < payload.Length; offset += 256 * 1024)
            {
                client.Send(payload, offset, Math.Min(256 * 1024, payload.Length - offset), SocketFlags.None);
            }
        });
        byte[] echoed = client.ReceiveExactly(payload.Length);
        await send;
        Assert.True(payload.AsSpan().SequenceEqual(echoed), "the echo differs");
        Connection connection = handler.Connections.Single();
        Assert.Equal(payload.Length, server.Harness.Invoke(() => connection.BytesReceived));
        Assert.Equal(payload.Length, server.Harness.Invoke(() => connection.BytesSent));
        Assert.True(connection.UsesCompletions);
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public void A_peer_reset_mid_way_ends_the_connection_as_reset_and_gives_every_buffer_back()
    {
        var handler = new EchoHandler();
        using var server = Server(handler);
        Socket client = server.Connect();
        byte[] chunk = SocketTestExtensions.Pattern(2, 256 * 1024);
        client.Send(chunk);
        client.ReceiveExactly(64 * 1024);
        client.LingerState = new LingerOption(true, 0);
        client.Dispose();
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection ends");
        (ConnectionCloseReason reason, SocketError error) = handler.Closes.Single();
        _output.WriteLine($"{reason} {error}");
        Assert.True(reason is ConnectionCloseReason.Reset or ConnectionCloseReason.BrokenPipe, reason.ToString());
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => server.Loop.CompletionIo!.ReceiveBuffersInUse) == 0, "every provided buffer is back in the ring");
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public void Close_with_pending_sends_delivers_every_byte_then_the_FIN()
    {
        byte[] big = SocketTestExtensions.Pattern(9, 8 * 1024 * 1024);
        var handler = new WriteThenCloseHandler(big);
        using var server = Server(handler, new ListenerOptions { Connection = { MaxBufferedBytes = 16 * 1024 * 1024, HighWatermark = 16 * 1024 * 1024, LowWatermark = 1024 } });
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        client.Send(new byte[] { 1 });
        byte[] received = client.ReceiveToEnd();
        Assert.Equal(big.Length, received.Length);
        Assert.True(big.AsSpan().SequenceEqual(received), "the bytes differ");
        client.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => handler.Reason != ConnectionCloseReason.None, "the connection ends");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Reason);
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public async Task Connections_opening_and_closing_never_get_each_others_bytes()
    {
        var handler = new EchoHandler();
        using var server = Server(handler);
        const int Workers = 8;
        const int Rounds = 60;
        await Task.WhenAll(Enumerable.Range(0, Workers).Select(w => Task.Run(() =>
        {
            for (int r = 0; r < Rounds; r++)
            {
                // Each connection's bytes are its own: a completion that reached another connection (a reused
                // descriptor number, a reused slot) would show here as foreign bytes.
                byte[] mine = SocketTestExtensions.Pattern((w * 1000) + r, 1 + ((w * 7919) + (r * 104729)) % (64 * 1024));
                using Socket s = server.Connect();
                s.Send(mine);
                byte[] back = s.ReceiveExactly(mine.Length);
                Assert.True(mine.AsSpan().SequenceEqual(back), $"worker {w} round {r}: foreign bytes");
                if (r % 3 == 0)
                {
                    s.LingerState = new LingerOption(true, 0);
                }
            }
        })));
        LoopHarness.WaitUntil(() => handler.Closed == Workers * Rounds, "every connection closes");
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => server.Loop.CompletionIo!.ReceiveBuffersInUse) == 0, "every provided buffer is back in the ring");
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public void Idle_connections_hold_no_receive_buffer()
    {
        const int Clients = 100;
        var handler = new EchoHandler();
        using var server = Server(handler);
        var sockets = Enumerable.Range(0, Clients).Select(_ => server.Connect()).ToList();
        foreach (Socket s in sockets)
        {
            s.Send(SocketTestExtensions.Pattern(1, 3000));
        }

        foreach (Socket s in sockets)
        {
            s.ReceiveExactly(3000);
        }

        // Every connection has a multishot receive armed, and none holds a buffer until data arrives.
        int inUse = server.Harness.Invoke(() => server.Loop.CompletionIo!.ReceiveBuffersInUse);
        long managedHeld = server.Harness.Invoke(() => handler.Connections.Sum(c => c.BufferedBytes));
        _output.WriteLine($"{Clients} idle connections: {inUse} provided buffers in use, {managedHeld} bytes buffered");
        Assert.Equal(0, inUse);
        Assert.Equal(0, managedHeld);
        sockets.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A connection that paused receiving holds what its armed receive took before the cancel reached the kernel, and no
    /// more than one arm's worth: the peer's further bytes stay in the socket, as on the readiness path (a multishot
    /// receive without a cap would drain the whole socket buffer, megabytes, into the process).
    /// </summary>
    [SkippableFact]
    public void A_paused_connection_holds_at_most_one_receive_arm_of_bytes()
    {
        var handler = new PauseOnFirstReceive();
        using var server = Server(handler);
        using Socket client = server.Connect();
        client.Blocking = false;
        byte[] chunk = new byte[64 * 1024];
        long sent = 0;
        while (sent < 64L * 1024 * 1024)
        {
            int n = client.Send(chunk, 0, chunk.Length, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock)
            {
                if (!client.Poll(500_000, SelectMode.SelectWrite))
                {
                    // Every buffer between the client and the server's socket stayed full: the server stopped taking bytes.
                    break;
                }

                continue;
            }

            Assert.Equal(SocketError.Success, error);
            sent += n;
        }

        Assert.InRange(sent, 1, 64L * 1024 * 1024 - 1);
        Connection connection = handler.Connections.Single();
        (long held, long received, bool completions) = server.Harness.Invoke(() => (connection.HeldBytes, connection.BytesReceived, connection.UsesCompletions));
        _output.WriteLine($"sent {sent:N0} bytes before the socket pushed back; delivered {received:N0}; held {held:N0}");
        Assert.True(completions);
        Assert.InRange(held, 0, IoUringBackend.ReceiveArmBytes + IoUringBackend.BufferSize);

        // Resumed, every byte arrives.
        server.Harness.Invoke(() => connection.ResumeReceiving());
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.BytesReceived) == sent, "every byte sent is delivered after the resume");
        Assert.Equal(0, server.Harness.Invoke(() => connection.HeldBytes));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// Connections that paused while their receives were taking bytes hold those bytes, in the provided buffers where the
    /// kernel put them, but they cannot starve the other connections of buffers: once a quarter of the ring's buffers hold
    /// such pieces, holders copy instead. With 48 connections paused and holding, another connection still echoes 1 MiB
    /// byte for byte; resumed, each paused connection gets every byte its client sent; closed, every buffer is back.
    /// </summary>
    [SkippableFact]
    public void Paused_connections_holding_bytes_do_not_starve_another_connection_of_buffers()
    {
        const int Holders = 48;
        const int Size = 1024 * 1024;
        var handler = new PauseOrEcho();
        using var server = Server(handler);
        IoUringBackend backend = Backend(server);
        var holders = new List<(Socket Client, long Sent)>();
        byte[] chunk = new byte[64 * 1024];
        chunk[0] = PauseOrEcho.PauseMark;
        for (int i = 0; i < Holders; i++)
        {
            Socket client = server.Connect();
            client.Blocking = false;

            // As much as the sockets take at once, up to 1 MiB: more than one receive arm's worth.
            long sent = 0;
            while (sent < Size)
            {
                int n = client.Send(chunk, 0, chunk.Length, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock)
                {
                    break;
                }

                Assert.Equal(SocketError.Success, error);
                sent += n;
            }

            holders.Add((client, sent));
        }

        // Every holder paused, and its receive's final completion (the cancel's) was handed over: what it holds now stays.
        LoopHarness.WaitUntil(() => handler.Paused.Count == Holders, "every holder pauses at its first bytes");
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => handler.Paused.All(c => !c.ReceiveArmed)), "every holder's receive ended");
        (long held, int kept, int outOfRing, int count) = server.Harness.Invoke(() => (handler.Paused.Sum(c => c.HeldBytes), backend.ReceiveBuffersKept, backend.ReceiveBuffersOut, backend.IncrementalBuffers ? IoUringBackend.LargeBufferCount : IoUringBackend.BufferCount));
        _output.WriteLine($"{Holders} paused connections hold {held:N0} bytes; {kept} of {count} buffers kept for them, {outOfRing} out of the ring");
        Assert.True(held > 0, "the paused connections hold bytes their receives took");
        Assert.InRange(kept, 0, count / 4);
        Assert.InRange(outOfRing, 0, (count / 4) + 1);

        // Another connection receives (and echoes) while they hold.
        using (Socket echo = server.Connect(receiveTimeoutMs: 30_000))
        {
            byte[] payload = SocketTestExtensions.Pattern(7, Size);
            payload[0] = (byte)'E';
            var send = Task.Run(() => echo.Send(payload));
            byte[] echoed = echo.ReceiveExactly(Size);
            send.Wait();
            Assert.True(payload.AsSpan().SequenceEqual(echoed), "the echo differs");
        }

        // Resumed, every paused connection gets every byte its client sent.
        server.Harness.Invoke(() =>
        {
            foreach (Connection c in handler.Paused)
            {
                c.ResumeReceiving();
            }
        });
        long expected = holders.Sum(h => h.Sent);
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => handler.Paused.Sum(c => c.BytesReceived)) == expected, "every paused connection receives every byte after the resume");
        Assert.Equal(0, server.Harness.Invoke(() => handler.Paused.Sum(c => c.HeldBytes)));
        holders.ForEach(h => h.Client.Dispose());
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => backend.ReceiveBuffersInUse) == 0, "every provided buffer is back in the ring");
        server.AssertNoLoopErrors();
    }

    /// <summary>The loop's io_uring backend (the completion path is on).</summary>
    private static IoUringBackend Backend(EchoServer server) => (IoUringBackend)server.Loop.CompletionIo!;

    /// <summary>
    /// Large messages on many connections at once, each way, byte for byte: with incrementally consumed buffers
    /// (Linux 6.12 and later) several connections' bytes share one provided buffer, each completion at its place in it.
    /// Afterwards, idle, no connection holds a buffer: at most the one the kernel is filling is out of the ring.
    /// </summary>
    [SkippableFact]
    public async Task One_MiB_each_way_on_many_connections_arrives_byte_for_byte()
    {
        const int Clients = 12;
        const int Size = 1024 * 1024;
        var handler = new EchoHandler();
        using var server = Server(handler);
        IoUringBackend backend = Backend(server);
        if (Environment.OSVersion.Version >= new Version(6, 12))
        {
            Assert.True(backend.IncrementalBuffers, "Linux 6.12 or later consumes provided buffers incrementally");
        }

        var sockets = Enumerable.Range(0, Clients).Select(_ => server.Connect(receiveTimeoutMs: 30_000)).ToList();
        await Task.WhenAll(sockets.Select((client, i) => Task.Run(async () =>
        {
            byte[] payload = SocketTestExtensions.Pattern(100 + i, Size);
            Task send = Task.Run(() =>
            {
                // Pieces of uneven sizes, so that the receives do not line up with the buffers.
                int offset = 0;
                for (int k = 0; offset < payload.Length; k++)
                {
                    int n = Math.Min(1 + ((k * 7919) + (i * 104729)) % (48 * 1024), payload.Length - offset);
                    client.Send(payload, offset, n, SocketFlags.None);
                    offset += n;
                }
            });
            byte[] echoed = client.ReceiveExactly(payload.Length);
            await send;
            Assert.True(payload.AsSpan().SequenceEqual(echoed), $"client {i}: the echo differs");
        })));

        var stats = server.Harness.Invoke(() => handler.Connections.Select(c => (c.BytesReceived, c.CompletionReceives, c.UsesCompletions)).ToList());
        (int inUse, int outOfRing, int size) = server.Harness.Invoke(() => (backend.ReceiveBuffersInUse, backend.ReceiveBuffersOut, backend.ReceiveBufferSize));
        _output.WriteLine($"incremental {backend.IncrementalBuffers}, buffers of {size} B; receive completions per connection: "
            + string.Join(", ", stats.Select(s => s.CompletionReceives)) + $"; idle: {inUse} buffers in use, {outOfRing} out of the ring");
        Assert.All(stats, s => Assert.True(s.UsesCompletions));
        Assert.All(stats, s => Assert.Equal(Size, s.BytesReceived));
        Assert.Equal(0, inUse);
        Assert.InRange(outOfRing, 0, backend.IncrementalBuffers ? 1 : 0);
        sockets.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// With incrementally consumed 64 KiB buffers a 16 KiB message is one receive completion and reaches the handler as
    /// one span (with 4 KiB buffers it was four of each).
    /// </summary>
    [SkippableFact]
    public void A_16_KiB_message_is_one_receive_completion_and_one_span()
    {
        const int Messages = 200;
        var handler = new SpanCountingEcho();
        using var server = Server(handler);
        Skip.IfNot(Backend(server).IncrementalBuffers, "the kernel does not consume provided buffers incrementally (Linux 6.12)");
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        byte[] message = SocketTestExtensions.Pattern(3, 16 * 1024);
        for (int m = 0; m < Messages; m++)
        {
            client.Send(message);
            Assert.Equal(message, client.ReceiveExactly(message.Length));
        }

        Connection connection = handler.Connections.Single();
        (long receives, long spans) = server.Harness.Invoke(() => (connection.CompletionReceives, handler.ReceivedSpans));
        _output.WriteLine($"{Messages} messages of 16 KiB: {receives} receive completions, {spans} spans handed to OnReceived");

        // A message arrives in one piece over loopback; one now and then may be split by the kernel (or at a buffer's end).
        Assert.InRange(receives, Messages, Messages * 5 / 4);
        Assert.InRange(spans, Messages, Messages * 5 / 4);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The layout of kernels before 6.12 (4 KiB buffers, each taken whole), chosen here by asking for no incremental
    /// consumption: large messages arrive byte for byte, and every buffer goes back to the ring.
    /// </summary>
    [SkippableFact]
    public void Without_incremental_consumption_4_KiB_buffers_carry_large_messages_byte_for_byte()
    {
        var handler = new EchoHandler();
        EchoServer server;
        IoUringBackend.IncrementalBuffersWanted = false;
        try
        {
            server = Server(handler);
        }
        finally
        {
            IoUringBackend.IncrementalBuffersWanted = true;
        }

        using (server)
        {
            IoUringBackend backend = Backend(server);
            Assert.False(backend.IncrementalBuffers);
            Assert.Equal(IoUringBackend.BufferSize, backend.ReceiveBufferSize);
            using Socket client = server.Connect(receiveTimeoutMs: 30_000);
            byte[] payload = SocketTestExtensions.Pattern(21, 1024 * 1024);
            client.Send(payload);
            Assert.True(payload.AsSpan().SequenceEqual(client.ReceiveExactly(payload.Length)), "the echo differs");
            long receives = server.Harness.Invoke(() => handler.Connections.Single().CompletionReceives);
            _output.WriteLine($"1 MiB in {receives} receive completions");
            Assert.InRange(receives, payload.Length / IoUringBackend.BufferSize, long.MaxValue);
            Assert.Equal(0, server.Harness.Invoke(() => backend.ReceiveBuffersOut));
            server.AssertNoLoopErrors();
        }
    }

    [SkippableFact]
    public void Completions_are_off_unless_switched_on()
    {
        Skip.IfNot(EpollSharp.Backends.BackendFactory.IsAvailable(EventLoopBackend.IoUring, out _), "no io_uring");
        using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring, IoUringCompletions = false });
        Assert.Null(loop.CompletionIo);
    }

    /// <summary>Echoes, and counts the spans handed to <see cref="OnReceived"/> (on the loop thread).</summary>
    private sealed class SpanCountingEcho : EchoHandler
    {
        public long ReceivedSpans;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            ReceivedSpans++;
            base.OnReceived(connection, data);
        }
    }

    /// <summary>Pauses receiving at the first bytes of a connection whose first byte is <see cref="PauseMark"/>; echoes the others.</summary>
    private sealed class PauseOrEcho : ConnectionHandler
    {
        public const byte PauseMark = (byte)'P';

        /// <summary>The paused connections (loop thread).</summary>
        public List<Connection> Paused { get; } = new();

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.BytesReceived == data.Length && data[0] == PauseMark)
            {
                connection.PauseReceiving();
                lock (Paused)
                {
                    Paused.Add(connection);
                }
            }
            else if (!Paused.Contains(connection))
            {
                connection.Write(data);
            }
        }
    }

    /// <summary>Pauses receiving at the first bytes (and delivers the rest once resumed).</summary>
    private sealed class PauseOnFirstReceive : ConnectionHandler
    {
        public ConcurrentQueue<Connection> Connections { get; } = new();

        public override void OnConnected(Connection connection) => Connections.Enqueue(connection);

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.BytesReceived == data.Length)
            {
                connection.PauseReceiving();
            }
        }
    }

    /// <summary>Writes a large block when the first byte arrives, then closes gracefully at once.</summary>
    private sealed class WriteThenCloseHandler : ConnectionHandler
    {
        private readonly byte[] _block;

        public WriteThenCloseHandler(byte[] block) => _block = block;

        public volatile ConnectionCloseReason Reason;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (connection.BytesSent == 0 && connection.BufferedBytes == 0)
            {
                Assert.True(connection.Write(_block));
                connection.Close(TimeSpan.FromSeconds(30));
            }
        }

        public override void OnClosed(Connection connection) => Reason = connection.CloseReason;
    }
}
