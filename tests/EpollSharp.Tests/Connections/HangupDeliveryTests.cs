namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A peer's FIN that the backend reported is read to the end of stream whatever read pass it was seen in: a pass that
/// stops at <see cref="ConnectionOptions.MaxReadsPerEvent"/>, or a pause, must not lose it (edge-triggered, no new
/// edge comes for it).
/// </summary>
public class HangupDeliveryTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Edge_triggered_reads_the_FIN_behind_a_pass_cut_short_by_MaxReadsPerEvent(EventLoopBackend backend)
    {
        var options = new ListenerOptions
        {
            Connection = new ConnectionOptions
            {
                TriggerMode = TriggerMode.Edge,
                ReceiveBufferSize = 256,
                MaxReadsPerEvent = 2,
                IdleTimeout = TimeSpan.FromSeconds(60),
            },
        };
        var handler = new ReadClosedCounter();
        using var server = new EchoServer(backend, handler, options);

        // Each client's whole upload and its FIN are in the server's socket before the server reads: its first pass sees
        // the hang-up and stops after two reads, and the rest (a short last read, then end of stream) is read by the
        // continuations; no new edge comes for the FIN.
        for (int round = 0; round < 10; round++)
        {
            using Socket client = server.Connect(receiveTimeoutMs: 5_000);
            LoopHarness.WaitUntil(() => handler.Connected == round + 1, "the connection starts");
            byte[] data = SocketTestExtensions.Pattern(round, 256 * 5 + 100);

            // Hold the loop while the data and the FIN arrive, so that its next wait reports both in one event.
            using var held = new System.Threading.ManualResetEventSlim();
            server.Loop.Post(() => held.Wait(TimeSpan.FromSeconds(5)));
            client.Send(data);
            client.Shutdown(SocketShutdown.Send);
            System.Threading.Thread.Sleep(20);
            held.Set();
            byte[] echoed = client.ReceiveToEnd();
            Assert.True(data.AsSpan().SequenceEqual(echoed), $"round {round}: {echoed.Length} of {data.Length} bytes echoed before end of stream");
        }

        LoopHarness.WaitUntil(() => handler.Closed == 10, "ten connections complete");
        Assert.Equal(10, handler.ReadClosedCalls);
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Edge_triggered_reads_a_FIN_that_arrived_while_receiving_was_paused(EventLoopBackend backend)
    {
        var options = new ListenerOptions
        {
            Connection = new ConnectionOptions { TriggerMode = TriggerMode.Edge, ReceiveBufferSize = 256, IdleTimeout = TimeSpan.FromSeconds(60) },
        };
        var handler = new PauseOnConnectHandler();
        using var server = new EchoServer(backend, handler, options);
        using Socket client = server.Connect(receiveTimeoutMs: 5_000);
        byte[] data = SocketTestExtensions.Pattern(7, 1000);
        client.Send(data);
        client.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => handler.Connected == 1, "the connection starts");

        // Let the data and the FIN arrive (and their readiness be reported) while paused, then resume.
        server.Harness.Settle();
        Connection connection = handler.Connections.Single();
        server.Harness.Invoke(connection.ResumeReceiving);
        byte[] echoed = client.ReceiveToEnd();
        Assert.True(data.AsSpan().SequenceEqual(echoed), $"{echoed.Length} of {data.Length} bytes echoed before end of stream");
        LoopHarness.WaitUntil(() => handler.Closed == 1, "the connection completes");
        Assert.Equal(ConnectionCloseReason.Completed, handler.Closes.Single().Reason);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Uploads_that_end_in_a_half_close_are_all_answered_under_default_edge_options(EventLoopBackend backend)
    {
        var options = new ListenerOptions { Connection = new ConnectionOptions { TriggerMode = TriggerMode.Edge, IdleTimeout = TimeSpan.FromSeconds(60) } };
        var handler = new ReadClosedCounter();
        using var server = new EchoServer(backend, handler, options);
        int[] sizes = { 300_000, 1_000_000, 2_500_000, 450_000, 8 * 1024 * 1024, 123_457 };
        Task[] clients = sizes.Select((size, i) => Task.Run(async () =>
        {
            using Socket client = server.Connect(receiveTimeoutMs: 20_000);
            byte[] data = SocketTestExtensions.Pattern(i, size);
            Task<byte[]> receive = Task.Run(client.ReceiveToEnd);
            await client.SendAllAsync(data);
            client.Shutdown(SocketShutdown.Send);
            byte[] echoed = await receive;
            Assert.True(data.AsSpan().SequenceEqual(echoed), $"client {i}: {echoed.Length} of {data.Length} bytes echoed before end of stream");
        })).ToArray();
        Assert.True(Task.WaitAll(clients, TimeSpan.FromSeconds(60)), "every client is answered in full");
        LoopHarness.WaitUntil(() => handler.Closed == sizes.Length, "every connection completes");
        Assert.Equal(sizes.Length, handler.ReadClosedCalls);
    }

    private class ReadClosedCounter : EchoHandler
    {
        private int _readClosed;

        public int ReadClosedCalls => System.Threading.Volatile.Read(ref _readClosed);

        public override void OnReadClosed(Connection connection)
        {
            System.Threading.Interlocked.Increment(ref _readClosed);
            base.OnReadClosed(connection);
        }
    }

    private sealed class PauseOnConnectHandler : ReadClosedCounter
    {
        public override void OnConnected(Connection connection)
        {
            connection.PauseReceiving();
            base.OnConnected(connection);
        }
    }
}
