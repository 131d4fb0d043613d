namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Disposing listeners, loops and groups releases every socket whatever state the loop is in: running, stopped, never
/// run, or dead of an unhandled exception.
/// </summary>
public class DisposeOrderTests
{
    /// <summary>The README's quick start: Run returns after Stop, then the listener is disposed, then the loop.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Disposing_the_listener_after_its_loop_stopped_closes_the_port_and_resets_the_connections(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        EventLoop loop = Backends.CreateLoop(backend);
        var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
        EndPoint endPoint = listener.LocalEndPoint;
        Task run = Task.Run(loop.Run);
        using Socket client = EchoServer.ConnectTo(endPoint, 5_000);
        client.Send(new byte[] { 1 });
        client.ReceiveExactly(1);
        loop.Stop();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));

        using (loop)
        using (listener)
        {
        }

        AssertRefused(endPoint);
        AssertEnded(client);
        Assert.Equal(1, handler.Closed);
        Assert.Equal(ConnectionCloseReason.ListenerDisposed, handler.Closes.Single().Reason);
        Assert.Equal(0, listener.ConnectionCount);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Disposing_a_loop_that_never_ran_closes_its_listener(EventLoopBackend backend)
    {
        EventLoop loop = Backends.CreateLoop(backend);
        var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler());
        EndPoint endPoint = listener.LocalEndPoint;
        loop.Dispose();
        AssertRefused(endPoint);
        listener.Dispose();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Disposing_a_running_loop_without_disposing_the_listener_releases_its_sockets(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        EventLoop loop = Backends.CreateLoop(backend);
        var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
        EndPoint endPoint = listener.LocalEndPoint;
        Task run = loop.Start();
        using Socket client = EchoServer.ConnectTo(endPoint, 5_000);
        client.Send(new byte[] { 1 });
        client.ReceiveExactly(1);
        loop.Dispose();
        Assert.True(run.Wait(TimeSpan.FromSeconds(10)));
        AssertRefused(endPoint);
        AssertEnded(client);
        Assert.Equal(1, handler.Closed);
        Assert.Equal(ConnectionCloseReason.LoopDisposed, handler.Closes.Single().Reason);
    }

    [Fact]
    public void A_group_whose_loop_died_still_shuts_down_and_releases_that_loops_sockets()
    {
        var handler = new ThrowOnByteHandler(0xEE);
        var group = new EventLoopGroup(2);
        var listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler, mode: GroupAcceptMode.SingleAcceptor);
        EndPoint endPoint = listeners[0].LocalEndPoint;

        // Round-robin over the two loops: two clients on each.
        var clients = Enumerable.Range(0, 4).Select(_ => EchoServer.ConnectTo(endPoint, 5_000)).ToArray();
        try
        {
            for (int i = 0; i < clients.Length; i++)
            {
                clients[i].Send(new byte[] { (byte)i });
                clients[i].ReceiveExactly(1);
            }

            Socket ClientOf(Connection c) => clients.Single(s => s.LocalEndPoint!.Equals(c.RemoteEndPoint));
            Connection[] onLoop1 = handler.Connections.Where(c => c.Loop == group.Loops[1]).ToArray();
            Assert.Equal(2, onLoop1.Length);

            // The handler throws on loop 1 and nothing handles it: that loop dies with one connection still open on it.
            ClientOf(onLoop1[0]).Send(new byte[] { 0xEE });
            LoopHarness.WaitUntil(() => !group.Loops[1].IsRunning, "loop 1 dies");

            Task shutdown = group.ShutdownAsync(TimeSpan.FromSeconds(5));
            Assert.True(shutdown.Wait(TimeSpan.FromSeconds(15)), "the shutdown completes although a loop died");
            foreach (Socket client in clients)
            {
                AssertEnded(client);
            }

            AssertRefused(endPoint);
            Assert.Equal(0, group.ConnectionCount);
            Assert.Contains(handler.Closes, c => c.Reason == ConnectionCloseReason.LoopDisposed);
        }
        finally
        {
            foreach (Socket client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public void Disposing_a_group_whose_loop_died_closes_that_loops_connections()
    {
        var handler = new ThrowOnByteHandler(0xEE);
        var group = new EventLoopGroup(1);
        var listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), handler);
        using Socket victim = EchoServer.ConnectTo(listeners[0].LocalEndPoint, 5_000);
        using Socket bystander = EchoServer.ConnectTo(listeners[0].LocalEndPoint, 5_000);
        bystander.Send(new byte[] { 1 });
        bystander.ReceiveExactly(1);
        victim.Send(new byte[] { 0xEE });
        LoopHarness.WaitUntil(() => !group.Loops[0].IsRunning, "the loop dies");
        group.Dispose();
        AssertEnded(victim);
        AssertEnded(bystander);
        AssertRefused(listeners[0].LocalEndPoint);
    }

    /// <summary>Nothing listens there any more: a connect is refused.</summary>
    private static void AssertRefused(EndPoint endPoint)
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var error = Assert.Throws<SocketException>(() => probe.Connect(endPoint));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
    }

    /// <summary>The server's side of <paramref name="client"/> is closed: the client reads end of stream or a reset.</summary>
    private static void AssertEnded(Socket client)
    {
        try
        {
            var buffer = new byte[16];
            int n;
            while ((n = client.Receive(buffer)) > 0)
            {
            }
        }
        catch (SocketException e)
        {
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
        }
    }

    private sealed class ThrowOnByteHandler : EchoHandler
    {
        private readonly byte _poison;

        public ThrowOnByteHandler(byte poison) => _poison = poison;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (data.IndexOf(_poison) >= 0)
            {
                throw new InvalidOperationException("poison byte");
            }

            base.OnReceived(connection, data);
        }
    }
}
