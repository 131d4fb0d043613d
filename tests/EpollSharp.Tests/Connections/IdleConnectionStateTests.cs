using System.Collections.Concurrent;
using EpollSharp.Tests.Reliability;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// What an accepted, idle connection holds: its descriptor is non-blocking and its addresses are right on every backend;
/// on io_uring's completion path (a socket wrapped around the descriptor of a multishot accept) it holds no more managed
/// memory than on epoll. Real sockets on loopback.
/// </summary>
public class IdleConnectionStateTests
{
    private const int F_GETFL = 3;
    private const int O_NONBLOCK = 0x800; // Linux

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_accepted_connection_is_non_blocking_and_knows_both_addresses(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 5 });
        Assert.Equal(5, client.ReceiveExactly(1)[0]);

        Connection connection = Assert.Single(handler.Connections);
        Assert.Equal(client.RemoteEndPoint, connection.LocalEndPoint);
        Assert.Equal(client.LocalEndPoint, connection.RemoteEndPoint);
        // A listener bound to one address: its connections share its address (as the runtime's own accept does).
        Assert.Same(server.Listener.LocalEndPoint, connection.LocalEndPoint);
        if (OperatingSystem.IsLinux())
        {
            int flags = Interop.Sys.fcntl((int)connection.SocketForTests.SafeHandle.DangerousGetHandle(), F_GETFL, 0);
            Assert.True(flags >= 0, "fcntl(F_GETFL) failed");
            Assert.True((flags & O_NONBLOCK) != 0, $"the accepted descriptor is non-blocking (flags 0x{flags:x})");
        }

        // Still served after the check.
        client.Send(new byte[] { 6 });
        Assert.Equal(6, client.ReceiveExactly(1)[0]);
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_wildcard_listeners_connection_knows_the_address_the_client_reached(EventLoopBackend backend)
    {
        using var run = new RunningLoop(backend);
        var handler = new EchoHandler();
        using var listener = ConnectionListener.Listen(run.Loop, new IPEndPoint(IPAddress.Any, 0), handler);
        int port = ((IPEndPoint)listener.LocalEndPoint).Port;
        using Socket client = EchoServer.ConnectTo(new IPEndPoint(IPAddress.Loopback, port));
        client.Send(new byte[] { 9 });
        Assert.Equal(9, client.ReceiveExactly(1)[0]);

        Connection connection = Assert.Single(handler.Connections);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), connection.LocalEndPoint);
        Assert.Equal(client.LocalEndPoint, connection.RemoteEndPoint);
    }
}

/// <summary>
/// On io_uring's completion path, a connection's send state (the native <c>msghdr</c> with its iovecs, and the pins) is
/// made with the first send and sized for what the sends take: one chunk for small messages, the most once a send took
/// more. Real sockets on loopback.
/// </summary>
public class CompletionSendStateTests
{
    [SkippableFact]
    public void The_send_state_is_made_with_the_first_send_and_grows_only_for_a_larger_backlog()
    {
        var handler = new BurstHandler();
        using EchoServer server = CompletionServer(handler);
        using Socket client = server.Connect();
        LoopHarness.WaitUntil(() => handler.Connections.Count == 1, "the client is accepted");
        Connection connection = Assert.Single(handler.Connections);
        Assert.True(server.Harness.Invoke(() => connection.UsesCompletions));
        Assert.Equal(0, server.Harness.Invoke(() => connection.SendMessageCapacity));

        for (int i = 0; i < 3; i++)
        {
            client.Send(new byte[] { 1 });
            Assert.Equal(1, client.ReceiveExactly(1)[0]);
        }

        Assert.Equal(1, server.Harness.Invoke(() => connection.SendMessageCapacity));
        Assert.Equal(1, server.Harness.Invoke(() => connection.SendPinCapacity));

        // One write of 40 KiB (below the high watermark, so it waits for the end of the iteration as a backlog of three
        // 16 KiB chunks, which one send takes).
        client.Send(new byte[] { 2 });
        byte[] burst = client.ReceiveExactly(BurstHandler.BurstBytes);
        Assert.All(burst, b => Assert.Equal(7, b));
        Assert.Equal(64, server.Harness.Invoke(() => connection.SendMessageCapacity));
        Assert.Equal(64, server.Harness.Invoke(() => connection.SendPinCapacity));

        client.Send(new byte[] { 1 });
        Assert.Equal(1, client.ReceiveExactly(1)[0]);
        Assert.Equal(64, server.Harness.Invoke(() => connection.SendMessageCapacity));
        server.AssertNoLoopErrors();
    }

    [SkippableFact]
    public void An_echo_sent_from_the_receive_buffer_pins_nothing_and_keeps_a_one_buffer_message()
    {
        var handler = new EchoHandler();
        using EchoServer server = CompletionServer(handler);
        using Socket client = server.Connect();
        for (int i = 0; i < 3; i++)
        {
            client.Send(new byte[] { 4 });
            Assert.Equal(4, client.ReceiveExactly(1)[0]);
        }

        Connection connection = Assert.Single(handler.Connections);
        Assert.True(server.Harness.Invoke(() => connection.UsesCompletions));
        Assert.True(connection.LoopBorrowedWrites > 0, "the echo was sent from the provided buffer it arrived in");
        Assert.Equal(1, server.Harness.Invoke(() => connection.SendMessageCapacity));
        Assert.Equal(0, server.Harness.Invoke(() => connection.SendPinCapacity));
        server.AssertNoLoopErrors();
    }

    /// <summary>A server on io_uring's completion path for <paramref name="handler"/>; skips the test where the kernel has none.</summary>
    private static EchoServer CompletionServer(ConnectionHandler handler)
    {
        var server = new EchoServer(EventLoopBackend.IoUring, handler, ioUringCompletions: true);
        if (server.Loop.CompletionIo is null)
        {
            server.Dispose();
            Skip.If(true, "io_uring completions unavailable on this kernel");
        }

        return server;
    }

    /// <summary>Echoes a 1 as one byte; answers a 2 with <see cref="BurstBytes"/> bytes of 7 in one write.</summary>
    private sealed class BurstHandler : ConnectionHandler
    {
        internal const int BurstBytes = 40 * 1024;

        public ConcurrentQueue<Connection> Connections { get; } = new();

        public override void OnConnected(Connection connection) => Connections.Enqueue(connection);

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            foreach (byte b in data)
            {
                if (b == 2)
                {
                    byte[] burst = new byte[BurstBytes];
                    Array.Fill(burst, (byte)7);
                    connection.Write(burst);
                }
                else
                {
                    connection.Write(new[] { b });
                }
            }
        }
    }
}

/// <summary>
/// The managed memory an idle connection holds, io_uring's completion path against epoll, in one process: the heap after
/// full collections, before and after a few hundred clients connected and stayed idle (the clients' own sockets are the
/// same in both runs). Not run in parallel with other tests, whose allocations would show in the heap.
/// </summary>
[Collection(TimingSensitive.Name)]
public class IdleConnectionMemoryTests
{
    private const int Clients = 300;

    /// <summary>Measurements of each path, of which the least counts (see <see cref="Compare"/>).</summary>
    private const int Rounds = 3;

    private readonly ITestOutputHelper _output;

    public IdleConnectionMemoryTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void An_idle_connection_on_the_completion_path_holds_no_more_managed_memory_than_on_epoll()
    {
#if EPOLLSHARP_NETSTANDARD2_0
        Skip.If(true, "the netstandard2.0 build's listeners accept through readiness");
#endif
        Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);

        (double epoll, double uring) = Compare(echo: false);
        _output.WriteLine($"managed heap per idle connection ({Clients} connections): epoll {epoll:N0} B, io_uring completion path {uring:N0} B");
        Assert.True(uring <= epoll, $"io_uring's completion path holds {uring:N0} B of managed heap per idle connection, epoll {epoll:N0} B");
    }

    [SkippableFact]
    public void A_connection_idle_after_one_echo_on_the_completion_path_holds_no_more_managed_memory_than_on_epoll()
    {
#if EPOLLSHARP_NETSTANDARD2_0
        Skip.If(true, "the netstandard2.0 build's listeners accept through readiness");
#endif
        Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);

        (double epoll, double uring) = Compare(echo: true);
        _output.WriteLine($"managed heap per connection idle after one echo ({Clients} connections): epoll {epoll:N0} B, io_uring completion path {uring:N0} B");
        Assert.True(uring <= epoll, $"io_uring's completion path holds {uring:N0} B of managed heap per connection idle after one echo, epoll {epoll:N0} B");
    }

    /// <summary>
    /// Each path's heap per connection: the least of <see cref="Rounds"/> alternating measurements, after one of each to
    /// warm statics, pools and code paths. Whatever else the process allocates meanwhile (the runtime's own threads, the
    /// test host) can only add to a measurement, by up to a few hundred bytes per connection now and then, so the least
    /// is the connections' own.
    /// </summary>
    private (double Epoll, double Uring) Compare(bool echo)
    {
        HeapPerIdleConnection(EventLoopBackend.Epoll, null, 4, echo);
        HeapPerIdleConnection(EventLoopBackend.IoUring, true, 4, echo);
        double epoll = double.MaxValue;
        double uring = double.MaxValue;
        for (int round = 0; round < Rounds; round++)
        {
            double e = HeapPerIdleConnection(EventLoopBackend.Epoll, null, Clients, echo);
            double u = HeapPerIdleConnection(EventLoopBackend.IoUring, true, Clients, echo);
            _output.WriteLine($"round {round + 1}: epoll {e:N0} B, io_uring {u:N0} B");
            epoll = Math.Min(epoll, e);
            uring = Math.Min(uring, u);
        }

        return (epoll, uring);
    }

    /// <summary>Heap growth per connection while <paramref name="count"/> idle clients are connected to a listener on <paramref name="backend"/>.</summary>
    /// <remarks>With <paramref name="echo"/>, each client has one byte echoed before the measurement.</remarks>
    private static double HeapPerIdleConnection(EventLoopBackend backend, bool? completions, int count, bool echo)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 10_000 }, completions);
        if (completions == true)
        {
            Skip.If(server.Loop.CompletionIo is null, "io_uring completions unavailable on this kernel");
            Assert.True(server.Listener.AcceptsWithCompletions);
        }

        var clients = new List<Socket>(count);

        // Connects count more clients into the list, waits until the server has accepted them, and echoes one byte on each
        // when the case echoes.
        void ConnectMore(List<Socket> into, string what)
        {
            int accepted = handler.Connected + count;
            for (int i = 0; i < count; i++)
            {
                into.Add(server.Connect());
            }

            LoopHarness.WaitUntil(() => handler.Connected == accepted, what);
            for (int i = into.Count - count; echo && i < into.Count; i++)
            {
                Echo(into[i]);
            }
        }

        try
        {
            // One connection first, so that what the first one creates once (the tables' first size, loggers) is in the baseline.
            clients.Add(server.Connect());
            LoopHarness.WaitUntil(() => handler.Connected == 1, "the first client is accepted");
            if (echo)
            {
                Echo(clients[0]);
            }

            // As many clients connect (and echo) and leave first, so that the tables indexed by descriptor or slot are
            // already as large as the measured clients need: a table doubling inside the measurement would add its whole
            // size to one run and not to another, by where the process's descriptor numbers happen to fall.
            var warm = new List<Socket>(count);
            try
            {
                ConnectMore(warm, "every warm-up client is accepted");
            }
            finally
            {
                warm.ForEach(s => s.Dispose());
            }

            LoopHarness.WaitUntil(() => handler.Closed == count, "every warm-up client's connection is closed");
            long before = Resources.CollectAndMeasureHeap();
            ConnectMore(clients, "every client is accepted");
            long after = Resources.CollectAndMeasureHeap();
            Assert.Equal(completions == true, handler.Connections.All(c => c.UsesCompletions));
            server.AssertNoLoopErrors();
            return (after - before) / (double)count;
        }
        finally
        {
            foreach (Socket s in clients)
            {
                s.Dispose();
            }
        }
    }

    private static void Echo(Socket client)
    {
        client.Send(new byte[] { 3 });
        Assert.Equal(3, client.ReceiveExactly(1)[0]);
    }
}
