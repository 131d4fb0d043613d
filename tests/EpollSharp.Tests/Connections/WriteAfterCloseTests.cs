namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The documented rule for writes after <see cref="Connection.Close()"/>: they are accepted while the close delivers the
/// input that had already arrived (so it can be answered), and refused once the sending side is being shut down
/// (<see cref="Connection.IsWriteClosed"/>).
/// </summary>
public class WriteAfterCloseTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_write_during_the_close_delivery_is_sent_before_the_FIN_and_one_after_it_is_refused(EventLoopBackend backend)
    {
        var handler = new CloseThenWriteHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });

        byte[] got = client.ReceiveToEnd();
        Assert.Equal(new byte[] { 0xAB }, got);
        Assert.True(handler.AcceptedInsideReceive);
        Assert.False(handler.WriteClosedInsideReceive);

        // Posted work runs after the pass ended the input: the FIN is on its way and writes are refused.
        Connection connection = handler.Connections.Single();
        (bool writeClosed, bool accepted) = server.Harness.Invoke(() => (connection.IsWriteClosed, connection.IsClosed || connection.Write(new byte[] { 0xCD })));
        Assert.True(writeClosed);
        Assert.False(accepted);
        client.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection completes");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Closes.Single().Reason);
    }

    private sealed class CloseThenWriteHandler : EchoHandler
    {
        public bool AcceptedInsideReceive { get; private set; }

        public bool WriteClosedInsideReceive { get; private set; }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            connection.Close();
            WriteClosedInsideReceive = connection.IsWriteClosed;
            AcceptedInsideReceive = connection.Write(new byte[] { 0xAB });
        }
    }
}
