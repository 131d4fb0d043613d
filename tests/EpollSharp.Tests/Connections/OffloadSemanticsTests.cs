namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

public class OffloadSemanticsTests
{
    /// <summary>A graceful close waits for a pending offload, so its result is still written before the FIN.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Close_waits_for_pending_offloads(EventLoopBackend backend)
    {
        var handler = new OffloadThenCloseHandler();
        using var server = new EchoServer(backend, handler);
        Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        byte[] all = client.ReceiveToEnd();
        Assert.Equal("done"u8.ToArray(), all);

        // The server waits for our side to close before it releases the connection (no reset for late data).
        client.Dispose();
        LoopHarness.WaitUntil(() => handler.Reason != ConnectionCloseReason.None, "closed");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Reason);
        Assert.True(handler.ContinuationOnLoopThread);
        server.AssertNoLoopErrors();
    }

    /// <summary>Offloaded work that throws resets the connection and reports the exception on the loop.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Offloaded_work_that_throws_resets_the_connection(EventLoopBackend backend)
    {
        var handler = new ThrowingOffloadHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        Assert.Throws<SocketException>(() => client.Receive(new byte[1]));
        LoopHarness.WaitUntil(() => !server.Errors.IsEmpty, "the exception reaches the loop");
        Assert.IsType<TimeoutException>(Assert.Single(server.Errors));
        Assert.Equal(ConnectionCloseReason.HandlerFault, handler.Reason);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Connection_methods_refuse_other_threads(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        LoopHarness.WaitUntil(() => handler.Connected == 1, "connected");
        Assert.True(handler.Connections.TryPeek(out Connection? connection));
        Assert.Throws<InvalidOperationException>(() => connection!.Write(new byte[1]));
        Assert.Throws<InvalidOperationException>(() => connection!.Close());
        Assert.Throws<InvalidOperationException>(() => connection!.Offload(() => 1, static (_, _) => { }));
        Assert.False(connection!.IsClosed);
    }

    private sealed class OffloadThenCloseHandler : ConnectionHandler
    {
        public volatile ConnectionCloseReason Reason;
        public volatile bool ContinuationOnLoopThread;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            connection.Offload(
                () =>
                {
                    Thread.Sleep(200);
                    return "done"u8.ToArray();
                },
                (c, result) =>
                {
                    ContinuationOnLoopThread = c.Loop.IsOnLoopThread;
                    c.Write(result);
                });

            // Closing now must not cut the pending result off.
            connection.Close();
        }

        public override void OnClosed(Connection connection) => Reason = connection.CloseReason;
    }

    private sealed class ThrowingOffloadHandler : ConnectionHandler
    {
        public volatile ConnectionCloseReason Reason;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            connection.Offload<int>(() => throw new TimeoutException("work failed"), static (_, _) => { });
        }

        public override void OnClosed(Connection connection) => Reason = connection.CloseReason;
    }
}
