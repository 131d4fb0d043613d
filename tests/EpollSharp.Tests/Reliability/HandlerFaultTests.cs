using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A handler that throws, in each of its callbacks in turn. The exception reaches the loop's UnhandledExceptionHandler (the
/// user is told), the connection it concerns is reset (HandlerFault) and no other, a control connection is still echoed,
/// the listener keeps accepting (its connection budget intact), and nothing leaks.
/// (The loop-level case, a readiness, timer or posted callback that throws, is Conformance.LoopTests.)
/// </summary>
[Collection(ProcessWide.Name)]
public class HandlerFaultTests
{
    private readonly ITestOutputHelper _output;

    public HandlerFaultTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string> Callbacks() => new()
    {
        nameof(ConnectionHandler.OnConnected),
        nameof(ConnectionHandler.OnReceived),
        nameof(ConnectionHandler.OnReadClosed),
        nameof(ConnectionHandler.OnWritePaused),
        nameof(ConnectionHandler.OnWriteResumed),
        nameof(ConnectionHandler.OnShutdownRequested),
        nameof(ConnectionHandler.OnClosed),
        nameof(ConnectionHandler.OnAcceptPaused),
        nameof(ConnectionHandler.OnAcceptResumed),
    };

    [SkippableTheory]
    [MemberData(nameof(Callbacks))]
    public async Task A_handler_that_throws_is_reported_resets_only_its_connection_and_leaks_nothing(string callback)
    {
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);
        await Scenario(callback);
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        string outcome = await Scenario(callback);
        _output.WriteLine($"{callback} threw: {outcome}");
        Resources.AssertBackTo(baseline, _output, "a handler that throws in " + callback);
    }

    private static async Task<string> Scenario(string callback)
    {
        var handler = new ThrowingHandler(callback);
        var options = new ListenerOptions
        {
            MaxConnections = 2,
            Connection = { HighWatermark = 16 * 1024, LowWatermark = 4 * 1024 },
        };
        using var server = new EchoServer(EventLoopBackend.Epoll, handler, options);
        using Socket control = server.Connect();
        Echo(control, 1);

        // The victim is the second connection.
        Socket victim = server.Connect();
        victim.ReceiveBufferSize = 16 * 1024;
        bool listenerCase = callback is nameof(ConnectionHandler.OnAcceptPaused) or nameof(ConnectionHandler.OnAcceptResumed);
        switch (callback)
        {
            case nameof(ConnectionHandler.OnConnected):
                break;
            case nameof(ConnectionHandler.OnReceived):
                victim.Send(new byte[] { 2 });
                break;
            case nameof(ConnectionHandler.OnReadClosed):
                victim.Shutdown(SocketShutdown.Send);
                break;
            case nameof(ConnectionHandler.OnWritePaused):
                victim.Send(new[] { (byte)'W' }); // the handler writes until backpressure starts; the client does not read
                break;
            case nameof(ConnectionHandler.OnWriteResumed):
                victim.Send(new[] { (byte)'W' });
                LoopHarness.WaitUntil(() => handler.WritePausedCount == 1, "backpressure starts");
                OwnThreads.Start(() => Drain(victim));
                break;
            case nameof(ConnectionHandler.OnShutdownRequested):
                Echo(victim, 3);
                _ = server.Listener.ShutdownAsync(TimeSpan.FromSeconds(5));
                break;
            case nameof(ConnectionHandler.OnClosed):
                Echo(victim, 4);
                victim.Shutdown(SocketShutdown.Send);
                break;
            default:
                Echo(victim, 5);
                break;
        }

        if (listenerCase)
        {
            // A third client finds the listener at its limit (OnAcceptPaused); the victim leaves, the listener resumes and
            // accepts it (OnAcceptResumed). It must be served, and so must a fourth after it: no connection or budget is lost.
            using Socket third = server.Connect();
            LoopHarness.WaitUntil(() => server.Listener.IsAcceptPaused, "the listener pauses at its limit");
            victim.Dispose();
            Echo(third, 6);
            third.Dispose();
            LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 1, "back to the control connection");
            using Socket fourth = server.Connect();
            Echo(fourth, 7);
        }
        else if (callback != nameof(ConnectionHandler.OnShutdownRequested))
        {
            LoopHarness.WaitUntil(() => handler.VictimReason != ConnectionCloseReason.None, "the victim's connection ends");
        }

        LoopHarness.WaitUntil(() => server.Errors.Count == 1, "the exception reaches the loop's handler");
        Exception error = server.Errors.Single();
        Assert.IsType<InvalidOperationException>(error);
        Assert.Equal("thrown in " + callback, error.Message);
        if (!listenerCase)
        {
            ConnectionCloseReason expected = callback == nameof(ConnectionHandler.OnClosed) ? ConnectionCloseReason.Completed : ConnectionCloseReason.HandlerFault;
            LoopHarness.WaitUntil(() => handler.VictimReason != ConnectionCloseReason.None, "the victim's connection ends");
            Assert.Equal(expected, handler.VictimReason);
        }

        if (callback == nameof(ConnectionHandler.OnShutdownRequested))
        {
            // The control connection was asked to close gracefully, and is.
            Assert.Empty(control.ReceiveToEnd());
            control.Shutdown(SocketShutdown.Send);
            LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "the shutdown completes");
        }
        else
        {
            Echo(control, 8);
            Assert.False(handler.ControlClosed);
        }

        victim.Dispose();
        return $"{error.GetType().Name} to the loop's handler; victim {handler.VictimReason}; {server.Listener.AcceptedCount} accepted";
    }

    private static void Echo(Socket socket, byte value)
    {
        socket.Send(new[] { value });
        Assert.Equal(value, socket.ReceiveExactly(1)[0]);
    }

    private static void Drain(Socket socket)
    {
        var buffer = new byte[65536];
        try
        {
            while (socket.Receive(buffer) > 0)
            {
            }
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>Echo; the second connection is the victim: the chosen callback throws for it (or, for the listener callbacks, throws once).</summary>
    private sealed class ThrowingHandler : EchoHandler
    {
        private readonly string _throwIn;
        private int _connections;
        private int _listenerThrows;

        public ThrowingHandler(string throwIn) => _throwIn = throwIn;

        public volatile bool ControlClosed;

        public ConnectionCloseReason VictimReason { get; private set; }

        public override void OnConnected(Connection connection)
        {
            base.OnConnected(connection);
            int n = Interlocked.Increment(ref _connections);
            connection.UserState = n == 2 ? "victim" : n == 1 ? "control" : "other";
            Throw(connection, nameof(OnConnected));
        }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            Throw(connection, nameof(OnReceived));
            if (data.Length == 1 && data[0] == (byte)'W')
            {
                // Write until backpressure starts (the kernel's buffers are full and the backlog reaches the high watermark).
                var block = new byte[64 * 1024];
                for (int i = 0; i < 1024 && !connection.IsWritePaused && connection.Write(block); i++)
                {
                }

                return;
            }

            base.OnReceived(connection, data);
        }

        public override void OnReadClosed(Connection connection)
        {
            Throw(connection, nameof(OnReadClosed));
            base.OnReadClosed(connection);
        }

        public override void OnWritePaused(Connection connection)
        {
            base.OnWritePaused(connection);
            Throw(connection, nameof(OnWritePaused));
        }

        public override void OnWriteResumed(Connection connection)
        {
            base.OnWriteResumed(connection);
            Throw(connection, nameof(OnWriteResumed));
        }

        public override void OnShutdownRequested(Connection connection)
        {
            Throw(connection, nameof(OnShutdownRequested));
            base.OnShutdownRequested(connection);
        }

        public override void OnClosed(Connection connection)
        {
            base.OnClosed(connection);
            if (connection.UserState is "victim")
            {
                VictimReason = connection.CloseReason;
            }
            else if (connection.UserState is "control")
            {
                ControlClosed = true;
            }

            Throw(connection, nameof(OnClosed));
        }

        public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode) => ThrowOnce(nameof(OnAcceptPaused));

        public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode) => ThrowOnce(nameof(OnAcceptResumed));

        private void Throw(Connection connection, string callback)
        {
            if (callback == _throwIn && connection.UserState is "victim")
            {
                throw new InvalidOperationException("thrown in " + callback);
            }
        }

        private void ThrowOnce(string callback)
        {
            if (callback == _throwIn && Interlocked.Increment(ref _listenerThrows) == 1)
            {
                throw new InvalidOperationException("thrown in " + callback);
            }
        }
    }
}
