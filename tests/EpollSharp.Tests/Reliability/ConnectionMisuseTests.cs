using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Bad input and misuse of the connection layer: timeouts out of range, writes to closed connections, oversize writes.</summary>
public class ConnectionMisuseTests
{
    private readonly ITestOutputHelper _output;

    public ConnectionMisuseTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// Timeouts of the connection layer: zero and negative ones are refused by name (Connections.GroupAndListenerTests checks
    /// IdleTimeout = 0); long ones (a year) work; one too long to schedule (TimeSpan.MaxValue) is refused by name where it is
    /// given, instead of breaking each connection later.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Out_of_range_and_enormous_connection_timeouts(EventLoopBackend backend)
    {
        Assert.Equal("CloseTimeout", Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { CloseTimeout = TimeSpan.FromSeconds(-1) }).ParamName);
        Assert.Equal("IdleTimeout", Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { IdleTimeout = TimeSpan.MaxValue }).ParamName);
        Assert.Equal("CloseTimeout", Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionOptions { CloseTimeout = TimeSpan.MaxValue }).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentOutOfRangeException>(() => new ListenerOptions { AcceptRetryDelay = TimeSpan.MaxValue }).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentOutOfRangeException>(() => new ListenerOptions { MaxAcceptRetryDelay = TimeSpan.MaxValue }).ParamName);
        Assert.Equal(Timeout.InfiniteTimeSpan, new ConnectionOptions { IdleTimeout = Timeout.InfiniteTimeSpan }.IdleTimeout);

        // A year is long but fine, for every timeout of a connection.
        var year = TimeSpan.FromDays(365);
        var handler = new EchoHandler();
        var options = new ListenerOptions { Connection = { IdleTimeout = year, CloseTimeout = year } };
        using var server = new EchoServer(backend, handler, options);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        Assert.Equal(1, client.ReceiveExactly(1)[0]);
        Connection connection = handler.Connections.Single();
        Assert.Equal("timeout", server.Harness.Invoke(() => Record.Exception(() => connection.Close(TimeSpan.MaxValue)) as ArgumentOutOfRangeException)?.ParamName);
        Assert.Equal("timeout", server.Harness.Invoke(() => Record.Exception(() => connection.Close(TimeSpan.FromTicks(-1))) as ArgumentOutOfRangeException)?.ParamName);
        Assert.False(connection.IsClosed, "a refused Close argument leaves the connection as it was");
        Assert.Equal("drainTimeout", Assert.IsType<ArgumentOutOfRangeException>(Record.Exception(() => { _ = server.Listener.ShutdownAsync(TimeSpan.MaxValue); })).ParamName);
        Assert.False(server.Listener.IsAcceptPaused);
        client.Send(new byte[] { 2 });
        Assert.Equal(2, client.ReceiveExactly(1)[0]);

        // A graceful close with a year's deadline completes as soon as the peer closes.
        server.Harness.Invoke(() => connection.Close(year));
        Assert.Empty(client.ReceiveToEnd());
        client.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection closes");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Closes.Single().Reason);
        await server.Listener.ShutdownAsync(year).WaitAsync(TimeSpan.FromSeconds(10));
        server.AssertNoLoopErrors();
    }
    /// <summary>
    /// Writing to a connection that is ending or has ended: refused (Write returns false), never an exception on the loop
    /// thread, nothing sent; the ending methods are idempotent on it, and an offload started on a closed connection never
    /// calls its continuation. (Write after Abort and from another thread: Connections.CloseTests and OffloadSemanticsTests.)
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Writes_to_ending_and_ended_connections_are_refused(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using Socket shutDown = server.Connect();
        using Socket closing = server.Connect();
        Socket reset = server.Connect();
        LoopHarness.WaitUntil(() => handler.Connected == 3, "three connections");
        Connection[] connections = handler.Connections.ToArray();
        Connection Find(Socket client) => connections.Single(c => c.RemoteEndPoint!.Equals(client.LocalEndPoint));
        Connection a = Find(shutDown), b = Find(closing), c = Find(reset);

        Assert.False(server.Harness.Invoke(() =>
        {
            a.Shutdown();
            return a.Write(new byte[] { 1 });
        }));
        Assert.True(a.IsWriteClosed);
        Assert.Empty(shutDown.ReceiveToEnd());

        Assert.False(server.Harness.Invoke(() =>
        {
            b.Close();
            return b.Write(new byte[] { 1 });
        }));
        Assert.Empty(closing.ReceiveToEnd());

        reset.LingerState = new LingerOption(true, 0);
        reset.Dispose();
        LoopHarness.WaitUntil(() => c.IsClosed, "the reset connection ends");
        int continuations = 0;
        Exception? thrown = server.Harness.Invoke(() => Record.Exception(() =>
        {
            Assert.False(c.Write(new byte[100]));
            Assert.False(c.Write(ReadOnlySpan<byte>.Empty));
            c.Shutdown();
            c.Close();
            c.Close(TimeSpan.Zero);
            c.PauseReceiving();
            c.ResumeReceiving();
            c.Abort();
            c.Offload(() => 1, (_, _) => Interlocked.Increment(ref continuations));
        }));
        Assert.Null(thrown);
        server.Harness.Settle(iterations: 5, sleepMs: 100);
        Assert.Equal(0, Volatile.Read(ref continuations));
        Assert.Equal(ConnectionCloseReason.Reset, c.CloseReason);
        Assert.Equal(0, c.BufferedBytes);
        Assert.Equal(0, a.BytesSent + b.BytesSent + c.BytesSent);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// One write far larger than MaxBufferedBytes to a client that is not reading: the kernel takes what fits in its buffers,
    /// the rest would exceed the limit, so the write is refused (false) and the connection reset (OutputLimitExceeded). The
    /// client receives an exact prefix of the data and then a reset, never a clean end of stream: it cannot mistake a cut
    /// stream for a complete one. The backlog never held more than the limit.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_oversize_write_is_refused_and_the_peer_sees_a_reset(EventLoopBackend backend)
    {
        const int Limit = 1024 * 1024;
        byte[] payload = SocketTestExtensions.Pattern(42, 32 * 1024 * 1024);
        var handler = new OversizeWriter(payload);
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = { MaxBufferedBytes = Limit } });
        using Socket client = server.Connect(receiveTimeoutMs: 20_000);
        client.ReceiveBufferSize = 64 * 1024;
        client.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => handler.Result.HasValue, "the write returns");
        Assert.False(handler.Result!.Value);
        Assert.Equal(ConnectionCloseReason.OutputLimitExceeded, handler.Reason);
        Assert.InRange(handler.BufferedAfter, 0, Limit);

        var received = new System.IO.MemoryStream();
        var buffer = new byte[65536];
        SocketError end = SocketError.Success;
        while (true)
        {
            int n = client.Receive(buffer, 0, buffer.Length, SocketFlags.None, out end);
            if (end != SocketError.Success || n == 0)
            {
                break;
            }

            received.Write(buffer, 0, n);
        }

        _output.WriteLine($"32 MiB write: the kernel took {handler.Sent:N0} bytes; the client read {received.Length:N0} bytes, then {end}");
        Assert.Equal(SocketError.ConnectionReset, end);
        Assert.InRange(received.Length, 0, handler.Sent);
        Assert.True(payload.AsSpan(0, (int)received.Length).SequenceEqual(received.ToArray()), "the client got exactly a prefix of the data");
        server.AssertNoLoopErrors();
    }

    private sealed class OversizeWriter : ConnectionHandler
    {
        private readonly byte[] _payload;

        public OversizeWriter(byte[] payload) => _payload = payload;

        public bool? Result { get; private set; }

        public long BufferedAfter { get; private set; }

        public long Sent { get; private set; }

        public ConnectionCloseReason Reason { get; private set; }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            bool result = connection.Write(_payload);
            BufferedAfter = connection.BufferedBytes;
            Sent = connection.BytesSent;
            Reason = connection.CloseReason;
            Result = result;
        }
    }
}
