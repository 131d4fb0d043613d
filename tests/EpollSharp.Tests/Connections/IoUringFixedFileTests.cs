using System.Globalization;
using System.IO;
using EpollSharp.Backends;
using EpollSharp.Tests.Util;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// Registered files on io_uring's completion path: connections' receives and sends name an index of the ring's file table,
/// and the table's entry, which holds its own reference on the socket, is cleared when a connection closes, so that the
/// peer sees the end of stream or the reset at once, nothing stays open after many connections, and an index taken again
/// never carries the old connection's completions. Also the fallbacks: no table, and a table that is full.
/// </summary>
public class IoUringFixedFileTests
{
    private readonly ITestOutputHelper _output;

    public IoUringFixedFileTests(ITestOutputHelper output) => _output = output;

    private static IoUringBackend Backend(EchoServer server) => (IoUringBackend)server.Loop.CompletionIo!;

    /// <summary>The server with the completion path, and with registered files where the kernel has them (Linux 5.19 and later).</summary>
    internal static EchoServer Server(ConnectionHandler handler)
    {
        EchoServer server = EchoServer.OnIoUringCompletions(handler);
        if (!Backend(server).FixedFilesAvailable(out string reason))
        {
            server.Dispose();
            Assert.True(Environment.OSVersion.Version < new Version(5, 19), "Linux 5.19 and later register a sparse file table: " + reason);
            Skip.If(true, "no registered files: " + reason);
        }

        return server;
    }

    private static int Fd(Connection connection) => (int)connection.SocketForTests.Handle;

    private static int IndexOf(EchoServer server, Connection connection) =>
        server.Harness.Invoke(() => Backend(server).FileIndexOf(Fd(connection)));

    [SkippableFact]
    public void Each_connection_names_its_own_index_and_every_index_is_given_back_when_they_close()
    {
        const int Clients = 16;
        var handler = new EchoHandler();
        using var server = Server(handler);
        IoUringBackend backend = Backend(server);
        var sockets = Enumerable.Range(0, Clients).Select(_ => server.Connect()).ToList();
        LoopHarness.WaitUntil(() => handler.Connected == Clients, "every client is accepted");
        byte[] message = SocketTestExtensions.Pattern(4, 64);
        foreach (Socket s in sockets)
        {
            s.Send(message);
            Assert.Equal(message, s.ReceiveExactly(message.Length));
        }

        List<int> indexes = handler.Connections.Select(c => IndexOf(server, c)).ToList();
        (int installed, int size) = server.Harness.Invoke(() => (backend.FilesInstalled, backend.FileTableSize));
        _output.WriteLine($"table of {size} entries; {installed} installed; indexes {string.Join(", ", indexes)}");
        Assert.All(indexes, i => Assert.InRange(i, 0, size - 1));
        Assert.Equal(Clients, indexes.Distinct().Count());
        Assert.Equal(Clients, installed);

        // The kernel's table holds the sockets (listed when the kernel takes the ring's lock at once: retried).
        LoopHarness.WaitUntil(() => RegisteredFiles(backend).Count == Clients, $"the ring's fdinfo lists {Clients} registered files");
        _output.WriteLine("fdinfo: " + string.Join("; ", RegisteredFiles(backend).Take(4)) + " ...");
        sockets.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == Clients, "every connection closes");
        Assert.Empty(RegisteredFiles(backend));
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        Assert.Equal(0, server.Harness.Invoke(() => backend.FilesInstalled));
        Assert.Equal(0, server.Harness.Invoke(() => backend.FileUpdateFailures));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The server closes gracefully: the peer reads the end of stream, and once the connection ended its socket's file is
    /// no longer in the ring's table (the kernel's own listing), so closing the descriptor closed the socket.
    /// </summary>
    [SkippableFact]
    public void A_server_close_reaches_the_peer_as_the_end_of_stream()
    {
        var handler = new CloseOnMark(abortive: false);
        using var server = Server(handler);
        for (int round = 0; round < 5; round++)
        {
            using Socket client = server.Connect();
            client.Send(new byte[] { 1 });
            Assert.Equal(new byte[] { 1 }, client.ReceiveExactly(1));
            Connection connection = handler.Connections.Last();
            Assert.True(IndexOf(server, connection) >= 0, "the connection names a registered file");
            client.Send(new[] { CloseOnMark.Mark });
            byte[] buffer = new byte[16];
            Assert.Equal(0, client.Receive(buffer));
            client.Dispose();
            LoopHarness.WaitUntil(() => handler.Closed == round + 1, "the connection ends");

            // The socket's file left the table when the connection closed.
            Assert.Empty(RegisteredFiles(Backend(server)));
        }

        Assert.Equal(0, server.Harness.Invoke(() => Backend(server).FilesInstalled));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The server closes abortively: the reset goes out only when the socket's file is let go (the linger of 0 acts when
    /// the last reference goes), so the peer sees it only if the table's entry was cleared with the close.
    /// </summary>
    [SkippableFact]
    public void An_abortive_server_close_reaches_the_peer_as_a_reset()
    {
        var handler = new CloseOnMark(abortive: true);
        using var server = Server(handler);
        for (int round = 0; round < 5; round++)
        {
            using Socket client = server.Connect();
            client.Send(new byte[] { 2 });
            Assert.Equal(new byte[] { 2 }, client.ReceiveExactly(1));
            Assert.True(IndexOf(server, handler.Connections.Last()) >= 0, "the connection names a registered file");
            client.Send(new[] { CloseOnMark.Mark });
            var error = Assert.Throws<SocketException>(() => client.Receive(new byte[16]));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        }

        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The server resets a connection while its client keeps sending; the next connection takes the same index and echoes
    /// its own bytes, byte for byte, with none of the old connection's (whose receive was still armed on that index).
    /// </summary>
    [SkippableFact]
    public async Task An_index_taken_again_never_gets_the_old_connections_completions()
    {
        const int Rounds = 20;
        var handler = new CloseOnMark(abortive: true);
        using var server = Server(handler);
        for (int round = 0; round < Rounds; round++)
        {
            Socket old = server.Connect();
            old.Send(new byte[] { 0xAA });
            Assert.Equal(new byte[] { 0xAA }, old.ReceiveExactly(1));
            Connection oldConnection = handler.Connections.Last();
            int oldIndex = IndexOf(server, oldConnection);
            Assert.True(oldIndex >= 0, "the connection names a registered file");

            // The old client floods while the server resets it (at the mark, which goes first).
            old.Send(new[] { CloseOnMark.Mark });
            using var stop = new CancellationTokenSource();
            Task flood = Task.Run(() =>
            {
                byte[] junk = Enumerable.Repeat((byte)0xAA, 16 * 1024).ToArray();
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        old.Send(junk);
                    }
                }
                catch (SocketException)
                {
                    // The reset.
                }
                catch (ObjectDisposedException)
                {
                }
            });
            LoopHarness.WaitUntil(() => server.Harness.Invoke(() => oldConnection.CloseReason) != ConnectionCloseReason.None, "the old connection ends");

            using Socket fresh = server.Connect(receiveTimeoutMs: 30_000);
            byte[] mine = SocketTestExtensions.Pattern(round, 64 * 1024);
            for (int k = 0; k < mine.Length; k++)
            {
                // Never the old client's byte, nor the close mark.
                if (mine[k] is 0xAA or CloseOnMark.Mark)
                {
                    mine[k] = 1;
                }
            }

            fresh.Send(mine, 0, 1, SocketFlags.None);
            Assert.Equal(mine[0], fresh.ReceiveExactly(1)[0]);
            Connection freshConnection = handler.Connections.Last();
            int freshIndex = IndexOf(server, freshConnection);
            Assert.Equal(oldIndex, freshIndex);
            Task send = Task.Run(() => fresh.Send(mine, 1, mine.Length - 1, SocketFlags.None));
            byte[] back = fresh.ReceiveExactly(mine.Length - 1);
            await send;
            Assert.True(mine.AsSpan(1).SequenceEqual(back), $"round {round}: foreign bytes on index {freshIndex}");
            Assert.Equal(mine.Length, server.Harness.Invoke(() => freshConnection.BytesReceived));
            stop.Cancel();
            old.Dispose();
            await flood;
            fresh.Dispose();

            // Both ended before the next round, whose connection then takes the index given back last.
            LoopHarness.WaitUntil(() => handler.Closed == 2 * (round + 1), "both connections of the round end");
        }

        Assert.Equal(0, server.Harness.Invoke(() => Backend(server).FileUpdateFailures));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// A loop stopped and run again on another thread gets a new ring (bound to its new thread): the new ring's table is
    /// registered with the open connection's socket at the same index, the connection goes on echoing, and its abortive
    /// close still reaches the peer as a reset (the old ring's table let go of the socket with the old ring).
    /// </summary>
    [SkippableFact]
    public void After_the_ring_moves_to_a_new_thread_a_connection_keeps_its_index_and_its_close_still_resets_the_peer()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring, IoUringCompletions = true });
        var handler = new CloseOnMark(abortive: true);
        ConnectionListener? listener = null;
        try
        {
            var backend = loop.CompletionIo as IoUringBackend;
            Skip.If(backend is null, "io_uring completions unavailable");
            Skip.IfNot(backend!.FixedFilesAvailable(out string reason), reason);
            Skip.IfNot(backend.IssuerBound, "the ring is not bound to the loop's thread: it never moves");
            listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
            Task first = loop.Start("first loop thread");
            using Socket a = EchoServer.ConnectTo(listener.LocalEndPoint);
            byte[] message = SocketTestExtensions.Pattern(3, 1000);
            message[0] = 1;
            a.Send(message);
            Assert.Equal(message, a.ReceiveExactly(message.Length));
            Connection connection = handler.Connections.Single();
            int index = backend.FileIndexOf(Fd(connection));
            Assert.True(index >= 0, "the connection names a registered file");

            loop.Stop();
            Assert.True(first.Wait(TimeSpan.FromSeconds(10)), "the loop did not stop");
            Task second = loop.Start("second loop thread");
            for (int i = 0; i < 20; i++)
            {
                a.Send(message);
                Assert.Equal(message, a.ReceiveExactly(message.Length));
            }

            Assert.Equal(1, backend.RingMoves);
            Assert.Equal(index, backend.FileIndexOf(Fd(connection)));
            LoopHarness.WaitUntil(() => RegisteredFiles(backend).Count == 1, "the new ring's fdinfo lists the connection's socket");
            _output.WriteLine("new ring's table: " + string.Join("; ", RegisteredFiles(backend)));

            a.Send(new[] { CloseOnMark.Mark });
            var error = Assert.Throws<SocketException>(() => a.Receive(new byte[16]));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
            Assert.Empty(RegisteredFiles(backend));
            Assert.Equal(0, backend.FileUpdateFailures);
            loop.Stop();
            Assert.True(second.Wait(TimeSpan.FromSeconds(10)), "the loop did not stop");
        }
        finally
        {
            listener?.Dispose();
            loop.Dispose();
        }
    }

    /// <summary>With registered files switched off, connections name their descriptors, and echo as before.</summary>
    [SkippableFact]
    public void Switched_off_connections_name_their_descriptors()
    {
        var handler = new EchoHandler();
        EchoServer server;
        IoUringBackend.FileTableSizeWanted = 0;
        try
        {
            server = EchoServer.OnIoUringCompletions(handler);
        }
        finally
        {
            IoUringBackend.FileTableSizeWanted = IoUringBackend.DefaultFileTableSize;
        }

        using (server)
        {
            Assert.False(Backend(server).FixedFilesAvailable(out string reason));
            _output.WriteLine(reason);
            Assert.Contains("switched off", reason, StringComparison.Ordinal);
            EchoAndClose(server, handler, clients: 4, expectIndexed: 0);
        }
    }

    /// <summary>
    /// A table of two entries: the first two connections take them, the others name their descriptors, and every one
    /// echoes; an index given back is taken by the next connection.
    /// </summary>
    [SkippableFact]
    public void Connections_beyond_a_full_table_name_their_descriptors()
    {
        var handler = new EchoHandler();
        EchoServer server;
        IoUringBackend.FileTableSizeWanted = 2;
        try
        {
            server = Server(handler);
        }
        finally
        {
            IoUringBackend.FileTableSizeWanted = IoUringBackend.DefaultFileTableSize;
        }

        using (server)
        {
            Assert.Equal(2, Backend(server).FileTableSize);
            EchoAndClose(server, handler, clients: 5, expectIndexed: 2);

            // Given back: the next connections take the indexes again.
            EchoAndClose(server, handler, clients: 3, expectIndexed: 2);
        }
    }

    [Theory]
    [InlineData(null, IoUringBackend.DefaultFileTableSize)]
    [InlineData("", IoUringBackend.DefaultFileTableSize)]
    [InlineData("lots", IoUringBackend.DefaultFileTableSize)]
    [InlineData("-5", IoUringBackend.DefaultFileTableSize)]
    [InlineData("0", 0)]
    [InlineData("off", 0)]
    [InlineData("false", 0)]
    [InlineData("1", IoUringBackend.DefaultFileTableSize)]
    [InlineData("on", IoUringBackend.DefaultFileTableSize)]
    [InlineData("512", 512)]
    [InlineData(" 4096 ", 4096)]
    [InlineData("99999999", IoUringBackend.MaxFileTableSize)]
    public void The_table_size_setting_is_parsed(string? value, int expected) =>
        Assert.Equal(expected, IoUringBackend.ParseFileTableSize(value));

    private void EchoAndClose(EchoServer server, EchoHandler handler, int clients, int expectIndexed)
    {
        int closedBefore = handler.Closed;
        int skip = handler.Connections.Count;
        var sockets = Enumerable.Range(0, clients).Select(_ => server.Connect()).ToList();
        LoopHarness.WaitUntil(() => handler.Connections.Count == skip + clients, "every client is accepted");
        byte[] message = SocketTestExtensions.Pattern(8, 3000);
        foreach (Socket s in sockets)
        {
            s.Send(message);
            Assert.Equal(message, s.ReceiveExactly(message.Length));
        }

        List<int> indexes = handler.Connections.Skip(skip).Select(c => IndexOf(server, c)).ToList();
        _output.WriteLine("indexes: " + string.Join(", ", indexes));
        Assert.Equal(expectIndexed, indexes.Count(i => i >= 0));
        Assert.All(handler.Connections.Skip(skip), c => Assert.True(c.UsesCompletions));
        sockets.ForEach(s => s.Dispose());
        LoopHarness.WaitUntil(() => handler.Closed == closedBefore + clients, "every connection closes");
        Assert.Equal(0, server.Harness.Invoke(() => Backend(server).FilesInstalled));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The kernel's view of the ring's file table: the entries /proc/self/fdinfo of the ring lists under "UserFiles" (index
    /// and the file's name), less the empty ones. The kernel lists them only when it gets the ring's lock at once: none
    /// are listed otherwise.
    /// </summary>
    internal static List<string> RegisteredFiles(IoUringBackend backend)
    {
        string[] lines = File.ReadAllLines("/proc/self/fdinfo/" + backend.RingDescriptor.ToString(CultureInfo.InvariantCulture));
        int start = Array.FindIndex(lines, l => l.StartsWith("UserFiles:", StringComparison.Ordinal));
        Assert.True(start >= 0, "the ring's fdinfo has no UserFiles line:\n" + string.Join("\n", lines));
        return lines.Skip(start + 1)
            .TakeWhile(l => l.TrimStart().Length > 0 && char.IsDigit(l.TrimStart()[0]))
            .Select(l => l.Trim())
            .Where(l => !l.EndsWith("<none>", StringComparison.Ordinal))
            .ToList();
    }

    /// <summary>The TCP state CLOSE_WAIT as /proc/net/tcp prints it.</summary>
    internal const string CloseWait = "08";

    /// <summary>Sockets of this network namespace on local port <paramref name="port"/> (the server's side) in <paramref name="state"/>.</summary>
    internal static int ServerSockets(int port, string state)
    {
        string local = ":" + port.ToString("X4", CultureInfo.InvariantCulture);
        return File.ReadLines("/proc/self/net/tcp").Skip(1)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Count(f => f.Length > 3 && f[1].EndsWith(local, StringComparison.Ordinal) && f[3] == state);
    }

    /// <summary>Echoes; closes the connection (gracefully, or with a reset) when a received piece starts with <see cref="Mark"/>.</summary>
    internal sealed class CloseOnMark : EchoHandler
    {
        public const byte Mark = 0xC1;

        private readonly bool _abortive;

        public CloseOnMark(bool abortive) => _abortive = abortive;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (data[0] == Mark)
            {
                if (_abortive)
                {
                    connection.Abort();
                }
                else
                {
                    connection.Close();
                }

                return;
            }

            base.OnReceived(connection, data);
        }
    }
}

/// <summary>
/// Registered files and the process's descriptors: in the process-wide collection, which runs alone, so that other tests'
/// sockets do not show up in the count.
/// </summary>
[Collection(EpollSharp.Tests.Reliability.ProcessWide.Name)]
public class IoUringFixedFileDescriptorTests
{
    private readonly ITestOutputHelper _output;

    public IoUringFixedFileDescriptorTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// Many connections opened and closed (by the client, by the server, abortively) leave nothing behind: the process's
    /// descriptors return to their count before, and no server-side socket waits in CLOSE_WAIT (a socket whose peer closed
    /// and that the server never closed: what an entry left set would keep).
    /// </summary>
    [SkippableFact]
    public void Many_open_and_close_cycles_leave_no_descriptor_and_no_socket_behind()
    {
        const int Cycles = 300;
        var handler = new IoUringFixedFileTests.CloseOnMark(abortive: false);
        using var server = IoUringFixedFileTests.Server(handler);
        IoUringBackend backend = (IoUringBackend)server.Loop.CompletionIo!;
        int before = Fds.CountOpen();
        _output.WriteLine($"{before} descriptors before");
        byte[] message = SocketTestExtensions.Pattern(6, 100);
        message[0] = 1;
        for (int i = 0; i < Cycles; i++)
        {
            using Socket client = server.Connect();
            client.Send(message);
            Assert.Equal(message, client.ReceiveExactly(message.Length));
            switch (i % 3)
            {
                case 0:
                    // The client closes first.
                    break;
                case 1:
                    client.Send(new[] { IoUringFixedFileTests.CloseOnMark.Mark });
                    Assert.Equal(0, client.Receive(new byte[16]));
                    break;
                default:
                    client.LingerState = new LingerOption(true, 0);
                    break;
            }
        }

        LoopHarness.WaitUntil(() => handler.Closed == Cycles, "every connection closes");
        int port = server.EndPoint.Port;
        LoopHarness.WaitUntil(() => IoUringFixedFileTests.ServerSockets(port, IoUringFixedFileTests.CloseWait) == 0, "no server socket waits in CLOSE_WAIT");
        LoopHarness.WaitUntil(() => Fds.CountOpen() <= before, $"the descriptors return to {before}");
        (int installed, int retiring, int failures) = server.Harness.Invoke(() => (backend.FilesInstalled, backend.FileIndexesRetiring, backend.FileUpdateFailures));
        _output.WriteLine($"{Cycles} cycles: descriptors {before} before, {Fds.CountOpen()} after; {installed} installed, {retiring} retiring, {failures} failed updates");
        Assert.Equal(0, installed);
        Assert.Equal(0, failures);
        Assert.Empty(IoUringFixedFileTests.RegisteredFiles(backend));
        server.AssertNoLoopErrors();
    }
}
