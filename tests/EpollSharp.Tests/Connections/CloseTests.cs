namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

public class CloseTests
{
    /// <summary>The client half-closes after sending: the server echoes everything, then half-closes too (the default), and the connection completes.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Peer_half_close_is_reported_and_the_data_before_it_is_echoed(EventLoopBackend backend)
    {
        var handler = new HalfCloseProbe();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        byte[] data = SocketTestExtensions.Pattern(3, 300_000);
        Task send = Task.Run(() =>
        {
            client.Send(data);
            client.Shutdown(SocketShutdown.Send);
        });
        byte[] echoed = client.ReceiveToEnd();
        send.Wait();
        Assert.True(data.AsSpan().SequenceEqual(echoed));
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection closes");
        Assert.Equal(1, handler.ReadClosedCalls);
        Assert.Equal(ConnectionCloseReason.Completed, handler.Closes.Single().Reason);
        server.AssertNoLoopErrors();
    }

    /// <summary>The server half-closes: the client reads end of stream but can still send, and the server still receives.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Server_half_close_sends_FIN_after_the_backlog_and_keeps_receiving(EventLoopBackend backend)
    {
        var handler = new ShutdownOnFirstByteHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.ReceiveBufferSize = 16 * 1024;
        client.Send(new byte[] { 42 });

        // The server wrote 1 MiB and shut down its side: the FIN comes only after all of it.
        byte[] got = client.ReceiveToEnd();
        Assert.Equal(1024 * 1024, got.Length);
        Assert.True(got.All(b => b == 7));

        // Our direction is still open.
        client.Send(new byte[5000]);
        LoopHarness.WaitUntil(() => Interlocked.Read(ref handler.ReceivedAfterShutdown) == 5000, "the server receives after its half-close");
        Assert.True(handler.WriteRefusedAfterShutdown);
        client.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => handler.Reason != ConnectionCloseReason.None, "the connection completes");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Reason);
        server.AssertNoLoopErrors();
    }

    /// <summary>A peer reset ends the connection with Reset and ConnectionReset, never an exception.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Peer_reset_ends_the_connection_with_a_reason(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        Socket client = server.Connect();
        client.Send(new byte[10]);
        client.ReceiveExactly(10);
        client.LingerState = new LingerOption(true, 0);
        client.Close();
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection ends");
        Assert.Equal((ConnectionCloseReason.Reset, SocketError.ConnectionReset), handler.Closes.Single());
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A client sends a byte and resets the connection while it still waits in the listener's queue (the listener is at
    /// its limit). Accepted later, the connection reads the byte, and the echo's send fails: on epoll with ECONNRESET; on
    /// kqueue with EPIPE (the BSD kernels refuse a send on a socket that can send no more before they look at its error,
    /// and over libkqueue the error was consumed into the event), while the event said ECONNRESET. Either way the
    /// connection ends as (Reset, ConnectionReset), never as BrokenPipe: the peer reset it.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_client_that_sent_and_reset_before_it_was_accepted_ends_as_Reset(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 1 });
        Socket holder = server.Connect();
        holder.Send(new byte[] { 1 });
        Assert.Equal(1, holder.ReceiveExactly(1)[0]);
        Socket quitter = server.Connect();
        quitter.Send(new byte[] { 2 });
        LoopHarness.WaitUntil(() => server.Listener.IsAcceptPaused, "the listener pauses at its limit");
        Thread.Sleep(50);
        quitter.LingerState = new LingerOption(true, 0);
        quitter.Dispose();
        Thread.Sleep(50);
        holder.Dispose();
        LoopHarness.WaitUntil(() => handler.Closed == 2, "both connections end");
        (ConnectionCloseReason Reason, SocketError Error)[] closes = handler.Closes.ToArray();
        Assert.Contains((ConnectionCloseReason.Completed, SocketError.Success), closes); // the holder, which closed normally
        Assert.Contains((ConnectionCloseReason.Reset, SocketError.ConnectionReset), closes); // the quitter
        server.AssertNoLoopErrors();
    }

    /// <summary>Writing to a peer that has gone ends with BrokenPipe or Reset (whichever the kernel reports first): no SIGPIPE, no exception.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Writing_to_a_closed_peer_ends_with_broken_pipe_or_reset(EventLoopBackend backend)
    {
        var handler = new LateWriterHandler();
        using var server = new EchoServer(backend, handler);
        Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => handler.Connection is not null, "the server sees the client");
        client.Close();
        Thread.Sleep(50);

        // Keep writing until the kernel reports the peer gone.
        LoopHarness.WaitUntil(
            () => server.Harness.Invoke(() =>
            {
                handler.Connection!.Write(new byte[1000]);
                return handler.Connection.IsClosed;
            }),
            "a write fails");
        Assert.Contains(handler.Connection!.CloseReason, new[] { ConnectionCloseReason.BrokenPipe, ConnectionCloseReason.Reset });
        Assert.Contains(handler.Connection.SocketError, new[] { SocketError.Shutdown, SocketError.ConnectionReset });
        server.AssertNoLoopErrors();
    }

    /// <summary>Abort resets: the client sees ECONNRESET, buffered output is dropped, OnClosed says Aborted.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Abort_resets_the_connection(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        client.ReceiveExactly(1);
        Connection connection = handler.Connections.Single();
        server.Harness.Invoke(connection.Abort);
        var error = Assert.Throws<SocketException>(() => client.Receive(new byte[10]));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        LoopHarness.WaitUntil(() => handler.Closed == 1, "OnClosed");
        Assert.Equal(ConnectionCloseReason.Aborted, handler.Closes.Single().Reason);
        Assert.Throws<InvalidOperationException>(() => connection.Write(new byte[1]));
        Assert.False(server.Harness.Invoke(() => connection.Write(new byte[1])));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// Graceful shutdown with data in flight: 100 clients each sent up to 256 KiB and read nothing yet, so the data sits in
    /// the server's receive queues (half of the connections had paused receiving), in its backlogs and in the socket buffers.
    /// After ShutdownAsync, every byte sent is echoed before the server's FIN, and every connection completes.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Graceful_shutdown_with_data_in_flight_loses_nothing(EventLoopBackend backend)
    {
        var handler = new PausingEchoHandler();
        using var server = new EchoServer(backend, handler);
        const int Clients = 100;
        var clients = new List<(Socket Socket, byte[] Data)>();
        for (int i = 0; i < Clients; i++)
        {
            Socket socket = server.Connect(receiveTimeoutMs: 20_000);
            socket.ReceiveBufferSize = 32 * 1024;
            clients.Add((socket, SocketTestExtensions.Pattern(100 + i, 1 + ((i * 7919) % (64 * 1024)))));
        }

        // Send without reading; the payloads fit the socket buffers, so these sends complete.
        foreach ((Socket socket, byte[] data) in clients)
        {
            socket.Send(data);
        }

        LoopHarness.WaitUntil(() => handler.Connected == Clients, "all connected");
        Thread.Sleep(100);
        Task shutdown = server.Listener.ShutdownAsync(TimeSpan.FromSeconds(20));
        Assert.False(shutdown.IsCompleted);

        // New connections are refused once shut down.
        LoopHarness.WaitUntil(() => !ConnectSucceeds(server), "the listening socket is closed");

        foreach ((Socket socket, byte[] data) in clients)
        {
            byte[] echoed = socket.ReceiveToEnd();
            Assert.Equal(data.Length, echoed.Length);
            Assert.True(data.AsSpan().SequenceEqual(echoed));
            socket.Dispose();
        }

        Assert.True(await Task.WhenAny(shutdown, Task.Delay(TimeSpan.FromSeconds(20))) == shutdown, "ShutdownAsync did not complete");
        Assert.Equal(Clients, handler.Closed);
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        server.AssertNoLoopErrors();
    }

    /// <summary>A connection that ignores the shutdown request is reset at the drain deadline.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Shutdown_resets_connections_still_open_at_the_deadline(EventLoopBackend backend)
    {
        var handler = new StubbornHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        client.ReceiveExactly(1);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await server.Listener.ShutdownAsync(TimeSpan.FromMilliseconds(300)).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.InRange(sw.ElapsedMilliseconds, 250, 5000);
        Assert.Equal(ConnectionCloseReason.ShutdownTimeout, handler.Closes.Single().Reason);
        Assert.Equal(1, handler.ShutdownRequests);
        server.AssertNoLoopErrors();
    }

    /// <summary>A connection that sends nothing is closed after the idle timeout; one that talks is not.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Idle_connections_are_closed_after_the_idle_timeout(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        var options = new ListenerOptions { Connection = { IdleTimeout = TimeSpan.FromMilliseconds(400) } };
        using var server = new EchoServer(backend, handler, options);
        using Socket silent = server.Connect();
        using Socket talker = server.Connect();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 1000)
        {
            talker.Send(new byte[] { 1 });
            talker.ReceiveExactly(1);
            Thread.Sleep(100);
        }

        Assert.Empty(silent.ReceiveToEnd());
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the silent connection closes");
        Assert.Equal(ConnectionCloseReason.IdleTimeout, handler.Closes.Single().Reason);
        talker.Send(new byte[] { 2 });
        Assert.Equal(2, talker.ReceiveExactly(1)[0]);
        server.AssertNoLoopErrors();
    }

    /// <summary>A handler that throws resets its connection; the exception reaches the loop's handler; other connections go on.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_throwing_handler_resets_its_connection_and_reports_the_exception(EventLoopBackend backend)
    {
        var handler = new ThrowOnByteHandler();
        using var server = new EchoServer(backend, handler);
        using Socket good = server.Connect();
        using Socket bad = server.Connect();
        bad.Send(new byte[] { 0xFF });
        Assert.Throws<SocketException>(() => bad.Receive(new byte[1]));
        LoopHarness.WaitUntil(() => !server.Errors.IsEmpty, "the exception reaches the loop");
        Assert.IsType<InvalidOperationException>(server.Errors.Single());
        Assert.Equal(ConnectionCloseReason.HandlerFault, handler.Closes.Single().Reason);
        good.Send(new byte[] { 1 });
        Assert.Equal(1, good.ReceiveExactly(1)[0]);
    }

    private static bool ConnectSucceeds(EchoServer server)
    {
        try
        {
            using Socket s = server.Connect(1000);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private sealed class HalfCloseProbe : EchoHandler
    {
        public int ReadClosedCalls;

        public override void OnReadClosed(Connection connection)
        {
            Interlocked.Increment(ref ReadClosedCalls);
            Assert.True(connection.IsReadClosed);
            base.OnReadClosed(connection);
        }
    }

    private sealed class ShutdownOnFirstByteHandler : ConnectionHandler
    {
        public long ReceivedAfterShutdown;
        public volatile bool WriteRefusedAfterShutdown;
        public volatile ConnectionCloseReason Reason;
        private bool _shut;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (_shut)
            {
                Interlocked.Add(ref ReceivedAfterShutdown, data.Length);
                return;
            }

            _shut = true;
            var block = new byte[64 * 1024];
            block.AsSpan().Fill(7);
            for (int i = 0; i < 16; i++)
            {
                Assert.True(connection.Write(block));
            }

            connection.Shutdown();
            WriteRefusedAfterShutdown = !connection.Write(block);
        }

        public override void OnWritePaused(Connection connection)
        {
        }

        public override void OnReadClosed(Connection connection)
        {
        }

        public override void OnClosed(Connection connection) => Reason = connection.CloseReason;
    }

    private sealed class LateWriterHandler : ConnectionHandler
    {
        public volatile Connection? Connection;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => Connection = connection;

        public override void OnReadClosed(Connection connection)
        {
            // Stay open: the test writes into the closed peer.
        }
    }

    /// <summary>Echo; every other connection pauses receiving at once, so its input waits in the kernel until the shutdown.</summary>
    private sealed class PausingEchoHandler : EchoHandler
    {
        private int _count;

        public override void OnConnected(Connection connection)
        {
            base.OnConnected(connection);
            if (Interlocked.Increment(ref _count) % 2 == 0)
            {
                connection.PauseReceiving();
                connection.UserState = "held";
            }
        }

        public override void OnShutdownRequested(Connection connection)
        {
            if (connection.UserState is "held")
            {
                connection.ResumeReceiving();
            }

            base.OnShutdownRequested(connection);
        }
    }

    private sealed class StubbornHandler : EchoHandler
    {
        public int ShutdownRequests;

        public override void OnShutdownRequested(Connection connection) => Interlocked.Increment(ref ShutdownRequests);
    }

    private sealed class ThrowOnByteHandler : EchoHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (data[0] == 0xFF)
            {
                throw new InvalidOperationException("handler bug");
            }

            base.OnReceived(connection, data);
        }
    }
}
