using System;
using System.Linq;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Connections;
using EpollSharp.Tests.Connections;
using EpollSharp.Tests.Util;
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
}
