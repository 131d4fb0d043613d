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
/// The managed memory an idle connection holds, io_uring's completion path against epoll, in one process: the heap after
/// full collections, before and after a few hundred clients connected and stayed idle (the clients' own sockets are the
/// same in both runs). Not run in parallel with other tests, whose allocations would show in the heap.
/// </summary>
[Collection(TimingSensitive.Name)]
public class IdleConnectionMemoryTests
{
    private const int Clients = 300;

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

        // Once each first (statics, pools and the code paths warm), then measured.
        HeapPerIdleConnection(EventLoopBackend.Epoll, null, 4);
        HeapPerIdleConnection(EventLoopBackend.IoUring, true, 4);
        double epoll = HeapPerIdleConnection(EventLoopBackend.Epoll, null, Clients);
        double uring = HeapPerIdleConnection(EventLoopBackend.IoUring, true, Clients);
        _output.WriteLine($"managed heap per idle connection ({Clients} connections): epoll {epoll:N0} B, io_uring completion path {uring:N0} B");
        Assert.True(uring <= epoll, $"io_uring's completion path holds {uring:N0} B of managed heap per idle connection, epoll {epoll:N0} B");
    }

    /// <summary>Heap growth per connection while <paramref name="count"/> idle clients are connected to a listener on <paramref name="backend"/>.</summary>
    private static double HeapPerIdleConnection(EventLoopBackend backend, bool? completions, int count)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 10_000 }, completions);
        if (completions == true)
        {
            Skip.If(server.Loop.CompletionIo is null, "io_uring completions unavailable on this kernel");
            Assert.True(server.Listener.AcceptsWithCompletions);
        }

        var clients = new List<Socket>(count);
        try
        {
            // One connection first, so that what the first one creates once (the tables' first size, loggers) is in the baseline.
            clients.Add(server.Connect());
            LoopHarness.WaitUntil(() => handler.Connected == 1, "the first client is accepted");
            long before = Resources.CollectAndMeasureHeap();
            for (int i = 1; i <= count; i++)
            {
                clients.Add(server.Connect());
            }

            LoopHarness.WaitUntil(() => handler.Connected == count + 1, "every client is accepted");
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
}
