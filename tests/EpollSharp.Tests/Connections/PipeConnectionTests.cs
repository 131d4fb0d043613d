using System.Buffers;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The pipe view of a connection (PipeConnectionHandler, PipeConnection) on every backend, with the application's
/// continuations on the thread pool and on the loop: echo, backpressure both ways, every way of ending, faults, memory.
/// </summary>
public class PipeConnectionTests
{
    private readonly ITestOutputHelper _output;

    public PipeConnectionTests(ITestOutputHelper output) => _output = output;

    public static IEnumerable<object[]> BackendsAndModes()
    {
        foreach (object[] backend in Backends.All())
        {
            yield return new object[] { backend[0], false };
            yield return new object[] { backend[0], true };
        }
    }

    /// <summary>Echoes until the peer's end of stream (or a canceled read), then returns: the connection closes gracefully.</summary>
    internal static async Task Echo(PipeConnection connection)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        while (true)
        {
            ReadResult result = await input.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                output.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);
            FlushResult flush = await output.FlushAsync();
            if (result.IsCompleted || result.IsCanceled || flush.IsCompleted)
            {
                return;
            }
        }
    }

    internal static PipeConnectionOptions Options(bool onLoop) => new() { RunContinuationsOnLoop = onLoop };

    /// <summary>Sends <paramref name="data"/> on a thread of its own while this one reads the echo: no deadlock for any size.</summary>
    private static byte[] RoundTrip(Socket client, byte[] data)
    {
        var sender = new Thread(() => client.Send(data)) { IsBackground = true };
        sender.Start();
        byte[] echo = client.ReceiveExactly(data.Length);
        sender.Join();
        return echo;
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Echo_through_the_pipes_of_an_accepted_connection_every_byte_checked(EventLoopBackend backend, bool onLoop)
    {
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(Tracked(started, Echo), Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using (Socket client = server.Connect(receiveTimeoutMs: 30_000))
        {
            int seed = 0;
            foreach (int size in new[] { 1, 100, 4096, 16 * 1024 + 1, 65536, 1024 * 1024, 3 * 1024 * 1024 + 7, 8 * 1024 * 1024 })
            {
                byte[] data = SocketTestExtensions.Pattern(seed++, size);
                Assert.True(data.AsSpan().SequenceEqual(RoundTrip(client, data)), $"echo of {size:N0} bytes differs");
            }

            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "the connection closes");
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// With continuations on the loop, the application's read continues inside the loop's receive, and its flush hands the
    /// bytes to the connection before it returns (sent, or queued behind the socket): no posted step in between. Each
    /// message is answered byte for byte, and the connection still ends gracefully at the peer's end of stream.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void With_continuations_on_the_loop_a_flush_hands_the_reply_to_the_connection_before_it_returns(EventLoopBackend backend)
    {
        var notHandedOver = new ConcurrentQueue<long>();
        var onLoopThread = new ConcurrentQueue<bool>();
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                PipeReader input = c.Transport.Input;
                PipeWriter output = c.Transport.Output;
                long flushed = 0;
                while (true)
                {
                    ReadResult result = await input.ReadAsync();
                    onLoopThread.Enqueue(c.Connection.Loop.IsOnLoopThread);
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        output.Write(segment.Span);
                    }

                    flushed += result.Buffer.Length;
                    input.AdvanceTo(result.Buffer.End);
                    FlushResult flush = await output.FlushAsync();
                    notHandedOver.Enqueue(flushed - (c.Connection.BytesSent + c.Connection.BufferedBytes));
                    if (result.IsCompleted || flush.IsCompleted)
                    {
                        return;
                    }
                }
            }),
            Options(onLoop: true));
        using var server = new EchoServer(backend, handler);
        using (Socket client = server.Connect(receiveTimeoutMs: 30_000))
        {
            for (int i = 0; i < 20; i++)
            {
                byte[] data = SocketTestExtensions.Pattern(i, i % 2 == 0 ? 64 : 40_000);
                Assert.True(data.AsSpan().SequenceEqual(RoundTrip(client, data)), $"echo {i} differs");
            }

            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        Assert.Equal(ConnectionCloseReason.Completed, CloseReasonOf(server, Last(started)));
        Assert.NotEmpty(notHandedOver);
        Assert.All(notHandedOver, pending => Assert.Equal(0, pending));
        Assert.All(onLoopThread, Assert.True);
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task A_dialed_pipe_connection_echoes_through_a_plain_server_and_closes_on_dispose(EventLoopBackend backend, bool onLoop)
    {
        using var loop = new RunningLoop(backend);
        using Socket listener = RunningLoop.PlainListener(backlog: 4);
        var serverThread = new Thread(() =>
        {
            using Socket peer = listener.Accept();
            var buffer = new byte[65536];
            int n;
            while ((n = peer.Receive(buffer)) > 0)
            {
                peer.Send(buffer, 0, n, SocketFlags.None);
            }

            peer.Shutdown(SocketShutdown.Send);
        }) { IsBackground = true };
        serverThread.Start();

        PipeConnection connection = await PipeConnection.ConnectAsync(loop.Loop, listener.LocalEndPoint!, Options(onLoop)).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Null(connection.Connection.Listener);
        Assert.Equal(listener.LocalEndPoint, connection.RemoteEndPoint);
        Assert.Equal(IPAddress.Loopback, ((IPEndPoint)connection.LocalEndPoint!).Address);
        byte[] data = SocketTestExtensions.Pattern(42, 8 * 1024 * 1024 + 3);
        Task writer = Task.Run(async () =>
        {
            PipeWriter output = connection.Transport.Output;
            for (int offset = 0; offset < data.Length; offset += 50_000)
            {
                await output.WriteAsync(data.AsMemory(offset, Math.Min(50_000, data.Length - offset)));
            }
        });
        var received = new MemoryStream();
        PipeReader input = connection.Transport.Input;
        while (received.Length < data.Length)
        {
            ReadResult result = await input.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                received.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);
            Assert.False(result.IsCompleted, "end of stream before the whole echo");
        }

        await writer.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(data.AsSpan().SequenceEqual(received.ToArray()), "echo differs");
        await connection.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(connection.ConnectionClosed.IsCancellationRequested);
        Assert.Equal(ConnectionCloseReason.Completed, connection.Connection.CloseReason);
        Assert.True(serverThread.Join(TimeSpan.FromSeconds(10)));
        Assert.Empty(loop.Errors);
    }

    /// <summary>The docs' one-line server: a listener whose connections the echo application serves through pipes.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_listener_serves_pipes_in_one_line(EventLoopBackend backend)
    {
        using var running = new RunningLoop(backend);
        EventLoop loop = running.Loop;
        var endPoint = new IPEndPoint(IPAddress.Loopback, 0);
        using var listener = ConnectionListener.Listen(loop, endPoint, new PipeConnectionHandler(Echo));
        using Socket client = EchoServer.ConnectTo(listener.LocalEndPoint);
        client.Send(new byte[] { 4, 5, 6 });
        Assert.Equal(new byte[] { 4, 5, 6 }, client.ReceiveExactly(3));
        client.Shutdown(SocketShutdown.Send);
        Assert.Empty(client.ReceiveToEnd());
        Assert.Empty(running.Errors);
    }

    /// <summary>
    /// The application reads nothing: the input fills to its pause threshold, the loop stops reading the socket, the
    /// kernel buffers fill and the client's send stalls; once the application reads, everything arrives in order.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void An_application_that_stops_reading_pauses_the_socket_and_resumes(EventLoopBackend backend, bool onLoop) =>
        InputBackpressure(backend, onLoop, TriggerMode.Level);

    /// <summary>The same, edge-triggered: resuming must read what waited in the socket, for which no new edge comes.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void An_application_that_stops_reading_pauses_the_socket_and_resumes_edge_triggered(EventLoopBackend backend, bool onLoop) =>
        InputBackpressure(backend, onLoop, TriggerMode.Edge);

    private void InputBackpressure(EventLoopBackend backend, bool onLoop, TriggerMode mode)
    {
        const int Pause = 64 * 1024;
        const int ReceiveBufferSize = 16 * 1024;
        byte[] payload = SocketTestExtensions.Pattern(3, 16 * 1024 * 1024);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long verified = -1;
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, InputPauseThreshold = Pause, InputResumeThreshold = Pause / 2 };
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                await release.Task;
                PipeReader input = c.Transport.Input;
                long offset = 0;
                bool same = true;
                while (offset < payload.Length)
                {
                    ReadResult result = await input.ReadAsync();
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        same &= segment.Span.SequenceEqual(payload.AsSpan((int)offset, segment.Length));
                        offset += segment.Length;
                    }

                    input.AdvanceTo(result.Buffer.End);
                }

                Interlocked.Exchange(ref verified, same ? offset : -2);
            }),
            options);
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = { ReceiveBufferSize = ReceiveBufferSize, TriggerMode = mode } });
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        client.SendBufferSize = 64 * 1024;
        long sent = 0;
        var sender = new Thread(() =>
        {
            for (int offset = 0; offset < payload.Length; offset += 16 * 1024)
            {
                client.Send(payload, offset, 16 * 1024, SocketFlags.None);
                Interlocked.Add(ref sent, 16 * 1024);
            }
        }) { IsBackground = true };
        sender.Start();
        WaitForStall(() => Interlocked.Read(ref sent), "the client's send");
        Assert.True(sender.IsAlive, "all 16 MiB went through although the application reads nothing");
        Connection connection = Last(started);
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.IsReceivingPaused), "receiving pauses");
        (bool paused, long received) = server.Harness.Invoke(() => (connection.IsReceivingPaused, connection.BytesReceived));
        _output.WriteLine($"{backend} {mode} onLoop={onLoop}: client stalled after {Interlocked.Read(ref sent):N0} bytes; the server read {received:N0}");
        Assert.True(paused, "receiving is not paused");
        Assert.InRange(received, Pause, Pause + ReceiveBufferSize);

        release.SetResult();
        Assert.True(sender.Join(TimeSpan.FromSeconds(30)), "the sender did not finish once the application read");
        LoopHarness.WaitUntil(() => Interlocked.Read(ref verified) != -1, "the application reads everything", 30);
        Assert.Equal(payload.Length, Interlocked.Read(ref verified));
        client.Shutdown(SocketShutdown.Send);
        Assert.Empty(client.ReceiveToEnd());
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The client reads nothing: the application's FlushAsync stops completing once the socket, the connection's backlog
    /// and the output pipe are full (memory bounded); when the client reads, every byte arrives and the flushes go on.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void A_client_that_stops_reading_makes_FlushAsync_wait(EventLoopBackend backend, bool onLoop)
    {
        const int HighWatermark = 64 * 1024;
        const int Chunk = 16 * 1024;
        byte[] payload = SocketTestExtensions.Pattern(5, 32 * 1024 * 1024);
        long flushed = 0;
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, OutputPauseThreshold = 64 * 1024, OutputResumeThreshold = 32 * 1024 };
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                PipeWriter output = c.Transport.Output;
                for (int offset = 0; offset < payload.Length; offset += Chunk)
                {
                    output.Write(payload.AsSpan(offset, Chunk));
                    await output.FlushAsync();
                    Interlocked.Exchange(ref flushed, offset + Chunk);
                }
            }),
            options);
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = { HighWatermark = HighWatermark, LowWatermark = 16 * 1024 } });
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        client.ReceiveBufferSize = 64 * 1024;
        WaitForStall(() => Interlocked.Read(ref flushed), "the application's flushes");
        Connection connection = Last(started);
        (long buffered, long sentToKernel) = server.Harness.Invoke(() => (connection.BufferedBytes, connection.BytesSent));
        long inPipe = Interlocked.Read(ref flushed) - sentToKernel - buffered;
        _output.WriteLine($"{backend} onLoop={onLoop}: flushes stalled at {Interlocked.Read(ref flushed):N0}; kernel took {sentToKernel:N0}, backlog {buffered:N0}, pipe about {inPipe:N0}");
        Assert.True(Interlocked.Read(ref flushed) < payload.Length, "every flush completed although the client reads nothing");
        Assert.InRange(buffered, 0, HighWatermark + (64 * 1024));
        Assert.InRange(inPipe, 0, 64 * 1024 + Chunk);

        byte[] received = client.ReceiveExactly(payload.Length);
        Assert.True(payload.AsSpan().SequenceEqual(received), "the bytes differ");
        Assert.Empty(client.ReceiveToEnd());
        Assert.Equal(payload.Length, Interlocked.Read(ref flushed));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// With continuations on the loop the output is not a pipe (the loop's writer hands a flush on the loop thread to the
    /// connection at once); the documented contract still holds: any thread may write and flush (one at a time), a flush
    /// from another thread goes through the loop in order with the loop's own, its continuation runs on the loop thread,
    /// and backpressure holds (the client reads only at the end). CancelPendingFlush from another thread cancels a waiting
    /// flush; completing from another thread sends everything, then end of stream.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void With_continuations_on_the_loop_the_output_may_be_written_from_another_thread_in_order(EventLoopBackend backend)
    {
        const int Items = 60;
        const int Size = 20_000;
        var offLoop = new ConcurrentQueue<bool>();
        var continuationOnLoop = new ConcurrentQueue<bool>();
        var canceled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = true, OutputPauseThreshold = 64 * 1024, OutputResumeThreshold = 32 * 1024 };
        var handler = new PipeConnectionHandler(
            async c =>
            {
                PipeWriter output = c.Transport.Output;
                for (int i = 0; i < Items; i++)
                {
                    if (i % 2 == 0)
                    {
                        output.Write(SocketTestExtensions.Pattern(i, Size));
                        await output.FlushAsync();
                        continuationOnLoop.Enqueue(c.Connection.Loop.IsOnLoopThread);
                    }
                    else
                    {
                        int item = i;
                        await Task.Run(async () =>
                        {
                            offLoop.Enqueue(!c.Connection.Loop.IsOnLoopThread);
                            output.Write(SocketTestExtensions.Pattern(item, Size));
                            await output.FlushAsync();
                        });
                    }
                }

                // The client reads nothing yet: a flush waits at the threshold; another thread cancels it.
                ValueTask<FlushResult> waiting = default;
                for (int n = 0; n < 10_000; n++)
                {
                    output.Write(new byte[16 * 1024]);
                    waiting = output.FlushAsync();
                    if (!waiting.IsCompleted)
                    {
                        break;
                    }

                    await waiting;
                }

                Assert.False(waiting.IsCompleted, "no flush waited although the client reads nothing");
                Task cancel = Task.Run(output.CancelPendingFlush);
                FlushResult result = await waiting;
                await cancel;
                for (int n = 0; !result.IsCanceled && n < 100; n++)
                {
                    // The kernel took more of the backlog (its send buffer grows) and released the flush before the cancel
                    // reached the loop: a CancelPendingFlush with no flush waiting cancels the next one, as a Pipe's does.
                    output.Write(new byte[16 * 1024]);
                    result = await output.FlushAsync();
                }

                canceled.SetResult(result.IsCanceled);
                await Task.Run(() => output.Complete());
            },
            options);
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = { HighWatermark = 64 * 1024, LowWatermark = 16 * 1024 } });
        using Socket client = server.Connect(receiveTimeoutMs: 30_000);
        client.ReceiveBufferSize = 64 * 1024;
        byte[] items = client.ReceiveExactly(Items * Size);
        for (int i = 0; i < Items; i++)
        {
            Assert.True(items.AsSpan(i * Size, Size).SequenceEqual(SocketTestExtensions.Pattern(i, Size)), $"item {i} differs");
        }

        // Then the client stops reading until the waiting flush was canceled.
        Assert.True(canceled.Task.Wait(TimeSpan.FromSeconds(30)), "the waiting flush was not canceled");
        Assert.True(canceled.Task.Result, "the canceled flush did not say IsCanceled");
        byte[] rest = client.ReceiveToEnd();
        Assert.Equal(0, rest.Length % (16 * 1024));
        Assert.NotEmpty(rest);
        Assert.All(offLoop, Assert.True);
        Assert.All(continuationOnLoop, Assert.True);
        server.AssertNoLoopErrors();
    }

    /// <summary>Completing the output sends what was flushed, then FIN; the application's input then completes too.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Completing_the_output_sends_everything_then_end_of_stream(EventLoopBackend backend, bool onLoop)
    {
        byte[] payload = SocketTestExtensions.Pattern(9, 1024 * 1024 + 5);
        var inputEnded = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                await c.Transport.Output.WriteAsync(payload);
                await c.Transport.Output.CompleteAsync();
                ReadResult result = await c.Transport.Input.ReadAsync();
                inputEnded.SetResult(result.IsCompleted);
                await Task.Delay(Timeout.Infinite, c.ConnectionClosed).ContinueWith(_ => { });
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using (Socket client = server.Connect())
        {
            Assert.True(payload.AsSpan().SequenceEqual(client.ReceiveToEnd()), "the bytes before end of stream differ");
            Assert.True(inputEnded.Task.Wait(TimeSpan.FromSeconds(10)) && inputEnded.Task.Result, "the input did not complete");
        }

        Connection connection = Last(started);
        Assert.Equal(ConnectionCloseReason.Completed, CloseReasonOf(server, connection));
        server.AssertNoLoopErrors();
    }

    /// <summary>Completing the output with an exception, or Abort, resets the connection: the client sees a reset.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Completing_the_output_with_an_exception_or_aborting_resets(EventLoopBackend backend, bool onLoop)
    {
        foreach (bool useAbort in new[] { false, true })
        {
            var started = new ConcurrentQueue<PipeConnection>();
            var handler = new PipeConnectionHandler(
                Tracked(started, async c =>
                {
                    ReadResult result = await c.Transport.Input.ReadAsync();
                    c.Transport.Input.AdvanceTo(result.Buffer.End);
                    await c.Transport.Output.WriteAsync(new byte[] { 1, 2, 3 });
                    if (useAbort)
                    {
                        c.Abort();
                    }
                    else
                    {
                        await c.Transport.Output.CompleteAsync(new InvalidOperationException("the application gives up"));
                    }

                    await Task.Delay(Timeout.Infinite, c.ConnectionClosed).ContinueWith(_ => { });
                }),
                Options(onLoop));
            using var server = new EchoServer(backend, handler);
            using Socket client = server.Connect();
            client.Send(new byte[] { 7 });
            var error = Assert.Throws<SocketException>(() =>
            {
                var buffer = new byte[100];
                while (client.Receive(buffer) > 0)
                {
                }
            });
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
            Connection connection = Last(started);
            Assert.Equal(ConnectionCloseReason.Aborted, CloseReasonOf(server, connection));
            server.AssertNoLoopErrors();
        }
    }

    /// <summary>The peer half-closes: the application reads everything before it, then IsCompleted, and can still answer.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void A_peer_half_close_completes_the_input_after_its_data_and_the_answer_still_goes_out(EventLoopBackend backend, bool onLoop)
    {
        byte[] payload = SocketTestExtensions.Pattern(11, 300_000);
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                PipeReader input = c.Transport.Input;
                var all = new MemoryStream();
                while (true)
                {
                    ReadResult result = await input.ReadAsync();
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        all.Write(segment.Span);
                    }

                    input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                }

                bool same = all.ToArray().AsSpan().SequenceEqual(payload);
                await c.Transport.Output.WriteAsync(System.Text.Encoding.ASCII.GetBytes(same ? $"ok {all.Length}" : "differs"));
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(payload);
        client.Shutdown(SocketShutdown.Send);
        Assert.Equal($"ok {payload.Length}", System.Text.Encoding.ASCII.GetString(client.ReceiveToEnd()));
        Connection connection = Last(started);
        Assert.Equal(ConnectionCloseReason.Completed, CloseReasonOf(server, connection));
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The peer resets: the application's ReadAsync throws an IOException (the pipe's rule), ConnectionClosed fires, and an
    /// application that lets that exception escape is not reported as faulty (it is the transport's own).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void A_peer_reset_fails_the_read_with_an_IOException_and_fires_ConnectionClosed(EventLoopBackend backend, bool onLoop)
    {
        var seen = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        var closedFired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                c.ConnectionClosed.Register(() => closedFired.TrySetResult());
                try
                {
                    await Echo(c);
                    seen.SetResult(null!);
                }
                catch (Exception ex)
                {
                    seen.SetResult(ex);
                    throw;
                }
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using (Socket client = server.Connect())
        {
            client.Send(new byte[] { 1, 2, 3 });
            Assert.Equal(3, client.ReceiveExactly(3).Length);
            client.LingerState = new LingerOption(true, 0);
        }

        Assert.True(seen.Task.Wait(TimeSpan.FromSeconds(10)), "the application's read did not end");
        Exception error = seen.Task.Result;
        Assert.IsType<IOException>(error);
        Assert.Equal(SocketError.ConnectionReset, Assert.IsType<SocketException>(error.InnerException).SocketErrorCode);
        Assert.True(closedFired.Task.Wait(TimeSpan.FromSeconds(10)), "ConnectionClosed did not fire");
        Connection connection = Last(started);
        Assert.Equal(ConnectionCloseReason.Reset, CloseReasonOf(server, connection));
        server.Harness.Settle();
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// Clients that send a few bytes and reset at once, many of them: every connection ends as a reset
    /// (<see cref="ConnectionCloseReason.Reset"/>, <c>ECONNRESET</c>), never as a broken pipe, and an application whose
    /// read or flush fails gets an <see cref="IOException"/> that says it was reset (a flush that finds the connection
    /// closed may instead complete, as Kestrel's does). The echo of those bytes races the reset: on io_uring
    /// the receive may take the connection's error from the kernel first, and the send then sees only <c>EPIPE</c>
    /// (a run of 2,000 such clients had up to 119 broken pipes before the backend reported the receive's error for it).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Clients_that_send_and_reset_at_once_are_all_seen_as_resets(EventLoopBackend backend, bool onLoop)
    {
        const int Clients = 1000;
        var errors = new ConcurrentQueue<string>();
        var started = new ConcurrentQueue<PipeConnection>();
        int ended = 0;
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                try
                {
                    // Ends without an error when a flush found the connection closed (FlushResult.IsCompleted).
                    await Echo(c);
                }
                catch (IOException ex) when (ex.InnerException is SocketException { SocketErrorCode: SocketError.ConnectionReset })
                {
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"{ex.GetType().Name}: {ex.Message}");
                }
                finally
                {
                    Interlocked.Increment(ref ended);
                }
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = Clients * 2 });
        for (int i = 0; i < Clients; i++)
        {
            using Socket client = server.Connect();
            client.Send(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 });
            client.LingerState = new LingerOption(true, 0);
        }

        LoopHarness.WaitUntil(() => Volatile.Read(ref ended) == Clients, "every application ended", seconds: 30);
        Assert.Empty(errors.GroupBy(e => e).Select(g => $"{g.Count()} x {g.Key}"));
        var reasons = started.Select(c => CloseReasonOf(server, c.Connection)).GroupBy(r => r).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(new Dictionary<ConnectionCloseReason, int> { [ConnectionCloseReason.Reset] = Clients }, reasons);
        server.AssertNoLoopErrors();
    }

    /// <summary>The server shuts down gracefully: ConnectionClosedRequested fires, the application finishes, the client gets its echo and then end of stream.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task A_graceful_server_shutdown_fires_ConnectionClosedRequested_and_the_connection_completes(EventLoopBackend backend, bool onLoop)
    {
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                using CancellationTokenRegistration registration = c.ConnectionClosedRequested.Register(() => c.Transport.Input.CancelPendingRead());
                await Echo(c);
                finished.SetResult();
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        byte[] hello = SocketTestExtensions.Pattern(1, 1000);
        client.Send(hello);
        Assert.Equal(hello, client.ReceiveExactly(hello.Length));

        Task shutdown = server.Listener.ShutdownAsync(TimeSpan.FromSeconds(20));
        await finished.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(client.ReceiveToEnd());
        client.Shutdown(SocketShutdown.Send);
        await shutdown.WaitAsync(TimeSpan.FromSeconds(20));
        Connection connection = Last(started);
        Assert.Equal(ConnectionCloseReason.Completed, CloseReasonOf(server, connection));
        server.AssertNoLoopErrors();
    }

    /// <summary>An application that throws: its connection is reset (HandlerFault), the exception reaches the loop's handler, and the loop serves the next connection.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void An_application_that_throws_resets_its_connection_and_the_loop_goes_on(EventLoopBackend backend, bool onLoop)
    {
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                ReadResult result = await c.Transport.Input.ReadAsync();
                if (result.Buffer.FirstSpan[0] == 0xFF)
                {
                    throw new InvalidOperationException("application bug");
                }

                c.Transport.Input.AdvanceTo(result.Buffer.Start);
                await Echo(c);
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using (Socket bad = server.Connect())
        {
            bad.Send(new byte[] { 0xFF });
            var error = Assert.Throws<SocketException>(() => bad.Receive(new byte[10]));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        }

        LoopHarness.WaitUntil(() => !server.Errors.IsEmpty, "the exception reaches the loop");
        Assert.Equal("application bug", Assert.IsType<InvalidOperationException>(server.Errors.Single()).Message);
        Assert.Equal(ConnectionCloseReason.HandlerFault, CloseReasonOf(server, Last(started)));

        using Socket good = server.Connect();
        good.Send(new byte[] { 1, 2, 3 });
        Assert.Equal(new byte[] { 1, 2, 3 }, good.ReceiveExactly(3));
        Assert.Single(server.Errors);
    }

    /// <summary>Pipe segments go back to the pool once consumed: an idle connection holds none (counted with a pool of our own).</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void An_idle_connection_holds_no_pipe_buffer(EventLoopBackend backend, bool onLoop)
    {
        var pool = new CountingPool();
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(Tracked(started, Echo), new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, MemoryPool = pool });
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        foreach (int size in new[] { 10, 5000, 200_000 })
        {
            byte[] data = SocketTestExtensions.Pattern(size, size);
            Assert.Equal(data, RoundTrip(client, data));
        }

        LoopHarness.WaitUntil(() => pool.Outstanding == 0, $"the pipes return their segments ({pool.Outstanding} outstanding)");
        Assert.True(pool.Rented > 0, "the pool was not used");
        _output.WriteLine($"{backend} onLoop={onLoop}: {pool.Rented} segments rented, {pool.Outstanding} outstanding when idle");
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// The application completes the input: the loop stops reading the socket for good (receiving stays paused), while the
    /// output still works; returning then closes the connection gracefully.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Completing_the_input_stops_reading_and_the_output_still_works(EventLoopBackend backend, bool onLoop)
    {
        var started = new ConcurrentQueue<PipeConnection>();
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inputCompleted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                ReadResult result = await c.Transport.Input.ReadAsync();
                c.Transport.Input.AdvanceTo(result.Buffer.End);
                await c.Transport.Input.CompleteAsync();
                inputCompleted.SetResult();
                await go.Task;
                await c.Transport.Output.WriteAsync(System.Text.Encoding.ASCII.GetBytes("bye"));
            }),
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        Connection connection = Last(started);
        Assert.True(inputCompleted.Task.Wait(TimeSpan.FromSeconds(10)), "the application did not complete the input");

        // The loop notices at the next bytes that arrive (as Kestrel's transport does): it stops reading, and they are discarded.
        client.Send(new byte[100]);
        LoopHarness.WaitUntil(() => server.Harness.Invoke(() => connection.IsReceivingPaused), "receiving pauses for good");
        long received = connection.BytesReceived;
        client.Send(new byte[1000]);
        server.Harness.Settle();
        Assert.Equal(received, connection.BytesReceived);

        go.SetResult();
        Assert.Equal("bye", System.Text.Encoding.ASCII.GetString(client.ReceiveExactly(3)));
        client.Shutdown(SocketShutdown.Send);
        Assert.Empty(client.ReceiveToEnd());
        Assert.Equal(ConnectionCloseReason.Completed, CloseReasonOf(server, connection));
        server.AssertNoLoopErrors();
    }

    /// <summary>The handler plugs into what takes a ConnectionHandler: a group of loops, and Connection.Connect (the application then runs for the dialed connection).</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task A_pipe_handler_serves_a_group_and_a_dialed_connection(EventLoopBackend backend, bool onLoop)
    {
        Backends.SkipUnlessAvailable(backend);
        var errors = new ConcurrentQueue<Exception>();
        using var group = new EventLoopGroup(2, new EventLoopOptions { Backend = backend, UnhandledExceptionHandler = errors.Enqueue });
        IReadOnlyList<ConnectionListener> listeners = group.Listen(new IPEndPoint(IPAddress.Loopback, 0), new PipeConnectionHandler(Echo, Options(onLoop)));
        EndPoint endPoint = listeners[0].LocalEndPoint;

        // Dialed with Connection.Connect: the application (a client) sends, reads the echo back, and returns.
        byte[] data = SocketTestExtensions.Pattern(77, 200_000);
        var verified = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = new PipeConnectionHandler(
            async c =>
            {
                await c.Transport.Output.WriteAsync(data);
                var received = new MemoryStream();
                while (received.Length < data.Length)
                {
                    ReadResult result = await c.Transport.Input.ReadAsync();
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        received.Write(segment.Span);
                    }

                    c.Transport.Input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                }

                verified.SetResult(received.ToArray().AsSpan().SequenceEqual(data));
            },
            Options(onLoop));
        for (int i = 0; i < 4; i++)
        {
            verified = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            Connection.Connect(group.Next(), endPoint, client);
            Assert.True(await verified.Task.WaitAsync(TimeSpan.FromSeconds(20)), "the echo differs");
        }

        await group.ShutdownAsync(TimeSpan.FromSeconds(10)).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Empty(errors);
    }

    /// <summary>
    /// Two handlers with different settings (each its own pool and output threshold) serve connections on one loop,
    /// alternately: each connection's pipes use its own handler's settings (the loop shares the pipes' options among the
    /// connections of a handler, never across handlers), and every echo arrives whole.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Handlers_with_different_settings_on_one_loop_each_keep_their_own(EventLoopBackend backend, bool onLoop)
    {
        var poolA = new CountingPool();
        var poolB = new CountingPool();
        var handlerA = new PipeConnectionHandler(Echo, new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, MemoryPool = poolA });
        var handlerB = new PipeConnectionHandler(Echo, new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, MemoryPool = poolB, OutputPauseThreshold = 8 * 1024, OutputResumeThreshold = 4 * 1024 });
        using var server = new EchoServer(backend, handlerA);
        using ConnectionListener listenerB = ConnectionListener.Listen(server.Loop, new IPEndPoint(IPAddress.Loopback, 0), handlerB);
        byte[] data = SocketTestExtensions.Pattern(5, 100_000);
        for (int i = 0; i < 3; i++)
        {
            foreach ((EndPoint endPoint, CountingPool mine, CountingPool other) in new[] { ((EndPoint)server.EndPoint, poolA, poolB), (listenerB.LocalEndPoint, poolB, poolA) })
            {
                int mineBefore = mine.Rented;
                int otherBefore = other.Rented;
                using Socket client = EchoServer.ConnectTo(endPoint);
                client.Send(data);
                Assert.Equal(data, client.ReceiveExactly(data.Length));
                client.Shutdown(SocketShutdown.Send);
                Assert.Empty(client.ReceiveToEnd());
                Assert.True(mine.Rented > mineBefore, "the connection's pipes did not rent from its handler's pool");
                Assert.Equal(otherBefore, other.Rented);
            }
        }

        LoopHarness.WaitUntil(() => poolA.Outstanding == 0 && poolB.Outstanding == 0, "every block goes back to its pool");
        server.AssertNoLoopErrors();
    }

    /// <summary>Many clients at once, random sizes up to 256 KiB, each echo checked byte for byte.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Many_concurrent_clients_echo_byte_for_byte(EventLoopBackend backend, bool onLoop)
    {
        const int Clients = 100;
        var handler = new PipeConnectionHandler(Echo, Options(onLoop));
        using var server = new EchoServer(backend, handler);
        var sw = Stopwatch.StartNew();
        Task[] clients = Enumerable.Range(0, Clients).Select(async i =>
        {
            var rng = new Random(i);
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await client.ConnectAsync(server.EndPoint);
            for (int m = 0; m < 3; m++)
            {
                byte[] data = SocketTestExtensions.Pattern((i * 3) + m, rng.NextDouble() < 0.9 ? rng.Next(1, 4097) : rng.Next(4097, 256 * 1024));
                Task send = client.SendAllAsync(data);
                byte[] echo = await client.ReceiveExactlyAsync(data.Length);
                await send;
                Assert.True(data.AsSpan().SequenceEqual(echo), $"client {i} message {m}: echo differs");
            }

            client.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await client.ReceiveAsync(new byte[1], SocketFlags.None));
        }).ToArray();
        await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(60));
        _output.WriteLine($"{backend} onLoop={onLoop}: {Clients} clients in {sw.ElapsedMilliseconds} ms");
        LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "every connection closes");
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// 250 connections at once, each ending its own way (the client half-closes, the client resets, the application aborts,
    /// completes its output early, or throws): every application finishes, every ConnectionClosed fires, every connection
    /// closes, and only the exceptions the applications threw reach the loop.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Many_connections_ending_every_way_at_once(EventLoopBackend backend, bool onLoop)
    {
        const int Clients = 250;
        int appsDone = 0;
        int closedFired = 0;
        var handler = new PipeConnectionHandler(
            async c =>
            {
                c.ConnectionClosed.Register(() => Interlocked.Increment(ref closedFired));
                try
                {
                    PipeReader input = c.Transport.Input;
                    ReadResult first = await input.ReadAsync();
                    byte command = first.Buffer.FirstSpan[0];
                    input.AdvanceTo(first.Buffer.Start);
                    switch (command)
                    {
                        case 2:
                            c.Abort();
                            break;
                        case 3:
                            ReadResult again = await input.ReadAtLeastAsync(1000);
                            await c.Transport.Output.WriteAsync(again.Buffer.ToArray());
                            input.AdvanceTo(again.Buffer.End);
                            await c.Transport.Output.CompleteAsync();
                            break;
                        case 4:
                            throw new InvalidOperationException("command 4");
                        default:
                            await Echo(c);
                            break;
                    }
                }
                finally
                {
                    Interlocked.Increment(ref appsDone);
                }
            },
            Options(onLoop));
        using var server = new EchoServer(backend, handler);
        Task[] clients = Enumerable.Range(0, Clients).Select(async i =>
        {
            byte command = (byte)(i % 5);
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await client.ConnectAsync(server.EndPoint);
            byte[] data = SocketTestExtensions.Pattern(i, command == 3 ? 1000 : 1 + (i * 997 % 20_000));
            data[0] = command;
            await client.SendAllAsync(data);
            var buffer = new byte[65536];
            try
            {
                switch (command)
                {
                    case 0:
                        Assert.Equal(data, await client.ReceiveExactlyAsync(data.Length));
                        client.Shutdown(SocketShutdown.Send);
                        Assert.Equal(0, await client.ReceiveAsync(buffer, SocketFlags.None));
                        break;
                    case 1:
                        Assert.Equal(data, await client.ReceiveExactlyAsync(data.Length));
                        client.LingerState = new LingerOption(true, 0);
                        break;
                    case 3:
                        Assert.Equal(data, await client.ReceiveExactlyAsync(data.Length));
                        Assert.Equal(0, await client.ReceiveAsync(buffer, SocketFlags.None));
                        break;
                    default:
                        // Aborted or faulted: a reset (or, had it raced, an end of stream), never data.
                        while (await client.ReceiveAsync(buffer, SocketFlags.None) > 0)
                        {
                        }

                        break;
                }
            }
            catch (SocketException e) when (command is 2 or 4 && e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
        }).ToArray();
        await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(60));
        LoopHarness.WaitUntil(() => Volatile.Read(ref appsDone) == Clients, $"every application finishes ({Volatile.Read(ref appsDone)} of {Clients})", 20);
        LoopHarness.WaitUntil(() => Volatile.Read(ref closedFired) == Clients, $"every ConnectionClosed fires ({Volatile.Read(ref closedFired)} of {Clients})", 20);
        LoopHarness.WaitUntil(() => server.Listener.ConnectionCount == 0, "every connection closes", 20);
        Assert.Equal(Clients / 5, server.Errors.Count);
        Assert.All(server.Errors, e => Assert.Equal("command 4", Assert.IsType<InvalidOperationException>(e).Message));
    }

    /// <summary>The loop is disposed under open pipe connections: the application's read ends with an IOException and ConnectionClosed fires; nothing is thrown anywhere else.</summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Disposing_the_loop_ends_the_pipes_of_its_connections(EventLoopBackend backend, bool onLoop)
    {
        var seen = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new ConcurrentQueue<PipeConnection>();
        var handler = new PipeConnectionHandler(
            Tracked(started, async c =>
            {
                c.ConnectionClosed.Register(() => closed.TrySetResult());
                try
                {
                    await Echo(c);
                    seen.SetResult(null);
                }
                catch (Exception ex)
                {
                    seen.SetResult(ex);
                }
            }),
            Options(onLoop));
        var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        client.Send(new byte[] { 1 });
        Assert.Equal(new byte[] { 1 }, client.ReceiveExactly(1));
        server.Dispose();
        Assert.True(seen.Task.Wait(TimeSpan.FromSeconds(10)), "the application's read did not end");
        Assert.IsType<IOException>(seen.Task.Result);
        Assert.True(closed.Task.Wait(TimeSpan.FromSeconds(10)), "ConnectionClosed did not fire");
        Assert.Equal(ConnectionCloseReason.ListenerDisposed, Last(started).CloseReason);
        server.AssertNoLoopErrors();
    }

    [Fact]
    public void Options_are_checked()
    {
        var options = new PipeConnectionOptions();
        Assert.Equal(1024 * 1024, options.InputPauseThreshold);
        Assert.Equal(512 * 1024, options.InputResumeThreshold);
        Assert.Equal(64 * 1024, options.OutputPauseThreshold);
        Assert.Equal(32 * 1024, options.OutputResumeThreshold);
        Assert.False(options.RunContinuationsOnLoop);
        Assert.Equal("InputPauseThreshold", Assert.Throws<ArgumentOutOfRangeException>(() => options.InputPauseThreshold = -1).ParamName);
        Assert.Equal("OutputResumeThreshold", Assert.Throws<ArgumentOutOfRangeException>(() => options.OutputResumeThreshold = -1).ParamName);
        options.InputResumeThreshold = 2 * 1024 * 1024;
        Assert.Equal("InputResumeThreshold", Assert.Throws<ArgumentOutOfRangeException>(() => new PipeConnectionHandler(Echo, options)).ParamName);
        options.InputPauseThreshold = 0;
        _ = new PipeConnectionHandler(Echo, options);
        Assert.Throws<ArgumentNullException>(() => new PipeConnectionHandler((Func<PipeConnection, Task>)null!));
    }

    /// <summary>
    /// The continuation trade-off under a little load (epoll, 16 connections of 64-byte ping-pong for 1.5 s per mode, the
    /// clients blocking threads of this process): messages per second and process CPU per message, reported, not asserted
    /// beyond sanity (the docs quote a run).
    /// </summary>
    [SkippableFact]
    public void Continuation_modes_compared_under_load()
    {
        foreach (bool onLoop in new[] { false, true, false, true })
        {
            var handler = new PipeConnectionHandler(Echo, Options(onLoop));
            using var server = new EchoServer(EventLoopBackend.Epoll, handler);
            const int Connections = 16;
            long messages = 0;
            using var stop = new ManualResetEventSlim();
            var threads = Enumerable.Range(0, Connections).Select(i => new Thread(() =>
            {
                using Socket client = server.Connect();
                var message = new byte[64];
                var echo = new byte[64];
                while (!stop.IsSet)
                {
                    client.Send(message);
                    int total = 0;
                    while (total < echo.Length)
                    {
                        total += client.Receive(echo, total, echo.Length - total, SocketFlags.None);
                    }

                    Interlocked.Increment(ref messages);
                }
            }) { IsBackground = true }).ToList();
            threads.ForEach(t => t.Start());
            Thread.Sleep(300);
            long before = Interlocked.Read(ref messages);
            TimeSpan cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            Thread.Sleep(1500);
            long count = Interlocked.Read(ref messages) - before;
            TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
            sw.Stop();
            stop.Set();
            threads.ForEach(t => t.Join());
            _output.WriteLine($"onLoop={onLoop}: {count / sw.Elapsed.TotalSeconds:N0} messages/s, {cpu.TotalMilliseconds * 1000 / count:F1} µs of process CPU per message ({Connections} connections)");
            Assert.True(count > 0);
            server.AssertNoLoopErrors();
        }
    }

    /// <summary>Records each PipeConnection the application is started with, then runs <paramref name="application"/>.</summary>
    internal static Func<PipeConnection, Task> Tracked(ConcurrentQueue<PipeConnection> started, Func<PipeConnection, Task> application) => c =>
    {
        started.Enqueue(c);
        return application(c);
    };

    /// <summary>
    /// Waits until <paramref name="connection"/> has closed and reads why on its loop (off the loop, IsClosed can be seen a
    /// moment before CloseReason is set).
    /// </summary>
    private static ConnectionCloseReason CloseReasonOf(EchoServer server, Connection connection)
    {
        LoopHarness.WaitUntil(() => connection.IsClosed, "the connection closes");
        return server.Harness.Invoke(() => connection.CloseReason);
    }

    /// <summary>The connection of the last application started.</summary>
    private static Connection Last(ConcurrentQueue<PipeConnection> started)
    {
        LoopHarness.WaitUntil(() => !started.IsEmpty, "the application starts");
        return started.Last().Connection;
    }

    /// <summary>Waits until <paramref name="progress"/> stops moving for 300 ms (and has moved).</summary>
    private static void WaitForStall(Func<long> progress, string what)
    {
        long last = -1;
        var sw = Stopwatch.StartNew();
        while (progress() != last || last <= 0)
        {
            last = progress();
            Thread.Sleep(300);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"{what} never stalled");
        }
    }

    /// <summary>A memory pool that counts the blocks it hands out and gets back.</summary>
    private sealed class CountingPool : MemoryPool<byte>
    {
        private int _outstanding;
        private int _rented;

        public int Outstanding => Volatile.Read(ref _outstanding);

        public int Rented => Volatile.Read(ref _rented);

        public override int MaxBufferSize => 1024 * 1024;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            Interlocked.Increment(ref _outstanding);
            Interlocked.Increment(ref _rented);
            return new Block(this, ArrayPool<byte>.Shared.Rent(minBufferSize <= 0 ? 4096 : minBufferSize));
        }

        protected override void Dispose(bool disposing)
        {
        }

        private sealed class Block : IMemoryOwner<byte>
        {
            private readonly CountingPool _pool;
            private byte[]? _array;

            public Block(CountingPool pool, byte[] array)
            {
                _pool = pool;
                _array = array;
            }

            public Memory<byte> Memory => _array ?? throw new ObjectDisposedException(nameof(Block));

            public void Dispose()
            {
                byte[]? array = Interlocked.Exchange(ref _array, null);
                if (array is not null)
                {
                    ArrayPool<byte>.Shared.Return(array);
                    Interlocked.Decrement(ref _pool._outstanding);
                }
            }
        }
    }
}
