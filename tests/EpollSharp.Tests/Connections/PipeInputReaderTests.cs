using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Text;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The reader semantics of <see cref="PipeConnection.Transport"/>'s input on real sockets, every backend, with the
/// application's continuations on the loop (the input is then a reader made for the purpose, not a Pipe) and on the thread
/// pool (a Pipe): both must behave as a PipeReader does. The application side here runs on test and pool threads, not the
/// loop, while the loop fills the input: examined-but-not-consumed bytes, cancellation, backpressure with a slow reader,
/// a reset in the middle of a read, the application completing its input.
/// </summary>
public class PipeInputReaderTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    public static IEnumerable<object[]> BackendsAndModes() => PipeConnectionTests.BackendsAndModes();

    /// <summary>A dialed pipe connection to a plain socket the test drives (the peer), on a running loop.</summary>
    private sealed class Dialed : IAsyncDisposable
    {
        private Dialed(RunningLoop loop, Socket peer, PipeConnection connection)
        {
            Loop = loop;
            Peer = peer;
            Connection = connection;
        }

        public RunningLoop Loop { get; }

        public Socket Peer { get; }

        public PipeConnection Connection { get; }

        public PipeReader Input => Connection.Transport.Input;

        public static Task<Dialed> Open(EventLoopBackend backend, PipeConnectionOptions options) => Open(new RunningLoop(backend), options);

        /// <summary>A connection on <paramref name="loop"/>, which the connection's disposal disposes.</summary>
        public static async Task<Dialed> Open(RunningLoop loop, PipeConnectionOptions options)
        {
            using Socket listener = RunningLoop.PlainListener(backlog: 1);
            Task<Socket> accepting = listener.AcceptAsync();
            PipeConnection connection = await PipeConnection.ConnectAsync(loop.Loop, listener.LocalEndPoint!, options).WaitAsync(Timeout);
            Socket peer = await accepting.WaitAsync(Timeout);
            peer.ReceiveTimeout = 20_000;
            return new Dialed(loop, peer, connection);
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                Peer.Dispose();
                await Connection.DisposeAsync().AsTask().WaitAsync(Timeout);
                Assert.Empty(Loop.Errors);
            }
            finally
            {
                Loop.Dispose();
            }
        }
    }

    private static string Text(ReadOnlySequence<byte> buffer) => Encoding.ASCII.GetString(buffer.ToArray());

    /// <summary><paramref name="length"/> bytes of a pattern that differs with <paramref name="seed"/> and repeats only every 251 bytes.</summary>
    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            bytes[i] = (byte)((i + seed) % 251);
        }

        return bytes;
    }

    /// <summary>Reads, consuming nothing and examining everything, until the input holds at least <paramref name="length"/> bytes.</summary>
    private static async Task<ReadResult> ReadAtLeast(PipeReader input, long length)
    {
        ReadResult result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        while (result.Buffer.Length < length)
        {
            Assert.False(result.IsCompleted, "the input ended early");
            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        }

        return result;
    }

    /// <summary>
    /// Reads larger than a small block (which the loop receives straight into memory the reader then keeps) and small ones
    /// (copied), in every order: bytes held unconsumed stay intact while more arrive behind them, a partly consumed buffer
    /// goes on with the next bytes, and a message larger than a whole block arrives complete.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Large_and_small_reads_arrive_intact_behind_bytes_still_held(EventLoopBackend backend, bool onLoop)
    {
        await using Dialed d = await Dialed.Open(backend, PipeConnectionTests.Options(onLoop));
        PipeReader input = d.Input;
        byte[] a = Pattern(12_000, 1);
        byte[] b = Pattern(16_384, 2);
        byte[] c = Encoding.ASCII.GetBytes("xyz");
        byte[] e = Pattern(40_000, 3);

        d.Peer.Send(a);
        ReadResult result = await ReadAtLeast(input, a.Length);
        Assert.Equal(a, result.Buffer.ToArray());

        // Held (examined, not consumed) while a whole block's worth more arrives.
        input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        d.Peer.Send(b);
        result = await ReadAtLeast(input, a.Length + b.Length);
        Assert.Equal(a.Concat(b).ToArray(), result.Buffer.ToArray());

        // Part consumed, then a small read behind the rest.
        input.AdvanceTo(result.Buffer.GetPosition(5_000), result.Buffer.End);
        d.Peer.Send(c);
        result = await ReadAtLeast(input, a.Length + b.Length + c.Length - 5_000);
        Assert.Equal(a.Skip(5_000).Concat(b).Concat(c).ToArray(), result.Buffer.ToArray());

        // All consumed; then more than two blocks' worth, consumed as it comes.
        input.AdvanceTo(result.Buffer.End);
        d.Peer.Send(e);
        var got = new List<byte>();
        while (got.Count < e.Length)
        {
            result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
            got.AddRange(result.Buffer.ToArray());
            input.AdvanceTo(result.Buffer.End);
        }

        Assert.Equal(e, got.ToArray());
        Assert.Equal(a.Length + b.Length + c.Length + e.Length, d.Loop.Harness.Invoke(() => d.Connection.Connection.BytesReceived));
    }

    /// <summary>
    /// With a <see cref="PipeConnectionOptions.MemoryPool"/> of the application's, every segment of the input is that
    /// pool's memory, large reads included (the loop lends its receive memory only with the pipes' own pool).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Input_segments_come_from_the_configured_pool_for_large_reads_too(EventLoopBackend backend, bool onLoop)
    {
        var pool = new RecordingPool();
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, MemoryPool = pool };
        await using Dialed d = await Dialed.Open(backend, options);
        PipeReader input = d.Input;
        byte[] data = Pattern(60_000, 11);
        d.Peer.Send(data);
        var got = new List<byte>();
        int segments = 0;
        while (got.Count < data.Length)
        {
            ReadResult result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(segment, out ArraySegment<byte> array), "a segment not backed by an array");
                Assert.True(pool.Lent.ContainsKey(array.Array!), "an input segment that is not the configured pool's memory");
                segments++;
            }

            got.AddRange(result.Buffer.ToArray());
            input.AdvanceTo(result.Buffer.End);
        }

        Assert.Equal(data, got.ToArray());
        Assert.True(segments > 0);
    }

    /// <summary>A pool that remembers every array it lent.</summary>
    private sealed class RecordingPool : MemoryPool<byte>
    {
        public ConcurrentDictionary<byte[], bool> Lent { get; } = new();

        public override int MaxBufferSize => 64 * 1024;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            var array = new byte[minBufferSize <= 0 ? 4096 : minBufferSize];
            Lent[array] = true;
            return new Owner(array);
        }

        protected override void Dispose(bool disposing)
        {
        }

        private sealed class Owner(byte[] array) : IMemoryOwner<byte>
        {
            public Memory<byte> Memory => array;

            public void Dispose()
            {
            }
        }
    }

    /// <summary>
    /// Two connections on one loop, the first reset while its application holds a large read: the bytes it holds stay
    /// intact while the second connection receives large reads into the loop's receive memory (before and after the
    /// first completes its input and its blocks go back to the pool), and a position of the first's buffer is refused
    /// by the second's reader.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Receive_memory_is_reused_after_a_reset_without_touching_bytes_still_held(EventLoopBackend backend, bool onLoop)
    {
        var loop = new RunningLoop(backend);
        Dialed first = await Dialed.Open(loop, PipeConnectionTests.Options(onLoop));
        await using Dialed second = await Dialed.Open(loop, PipeConnectionTests.Options(onLoop));
        byte[] a = Pattern(10_000, 4);
        first.Peer.Send(a);
        ReadResult held = await ReadAtLeast(first.Input, a.Length);
        first.Peer.LingerState = new LingerOption(true, 0);
        first.Peer.Close();
        LoopHarness.WaitUntil(() => loop.Harness.Invoke(() => first.Connection.Connection.IsClosed), "the reset closes the first connection");

        byte[] b = Pattern(10_000, 5);
        second.Peer.Send(b);
        ReadResult result = await ReadAtLeast(second.Input, b.Length);
        Assert.Equal(b, result.Buffer.ToArray());
        Assert.Equal(a, held.Buffer.ToArray());
        if (onLoop)
        {
            Assert.Throws<InvalidOperationException>(() => second.Input.AdvanceTo(held.Buffer.End));
        }

        second.Input.AdvanceTo(result.Buffer.End);
        first.Input.Complete();
        first.Peer.Dispose();
        await first.Connection.DisposeAsync().AsTask().WaitAsync(Timeout);

        for (int seed = 6; seed < 10; seed++)
        {
            byte[] more = Pattern(12_000, seed);
            second.Peer.Send(more);
            result = await ReadAtLeast(second.Input, more.Length);
            Assert.Equal(more, result.Buffer.ToArray());
            second.Input.AdvanceTo(result.Buffer.End);
        }
    }

    /// <summary>
    /// AdvanceTo(start, end) examined everything: the next ReadAsync waits for new bytes and then returns the old ones
    /// with them; consuming part and examining no further makes the next read return at once; TryRead finds the unconsumed
    /// bytes; positions of a consumed buffer, two reads without AdvanceTo and a read after Complete are refused.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Examined_but_not_consumed_bytes_wait_for_new_ones(EventLoopBackend backend, bool onLoop)
    {
        await using Dialed d = await Dialed.Open(backend, PipeConnectionTests.Options(onLoop));
        PipeReader input = d.Input;

        d.Peer.Send(Encoding.ASCII.GetBytes("abc"));
        ReadResult first = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        while (first.Buffer.Length < 3)
        {
            input.AdvanceTo(first.Buffer.Start, first.Buffer.End);
            first = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        }

        Assert.Equal("abc", Text(first.Buffer));
        input.AdvanceTo(first.Buffer.Start, first.Buffer.End);

        // Everything examined: the read waits, and TryRead would be a second read; two reads at once are refused.
        ValueTask<ReadResult> waiting = input.ReadAsync();
        Assert.False(waiting.IsCompleted, "a read after examining everything completed without new bytes");
        if (onLoop)
        {
            Assert.Throws<InvalidOperationException>(() => input.ReadAsync());
        }

        d.Peer.Send(Encoding.ASCII.GetBytes("de"));
        ReadResult second = await waiting.AsTask().WaitAsync(Timeout);
        while (second.Buffer.Length < 5)
        {
            input.AdvanceTo(second.Buffer.Start, second.Buffer.End);
            second = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        }

        Assert.Equal("abcde", Text(second.Buffer));
        Assert.False(second.IsCanceled);
        Assert.False(second.IsCompleted);

        // A read that was not advanced: another read is refused.
        Assert.Throws<InvalidOperationException>(() => input.ReadAsync());

        // Consume two, examine no further (less than examined before): the next read returns the rest at once.
        input.AdvanceTo(second.Buffer.GetPosition(2));
        ValueTask<ReadResult> again = input.ReadAsync();
        Assert.True(again.IsCompleted, "a read after examining less than everything waited");
        ReadResult third = await again;
        Assert.Equal("cde", Text(third.Buffer));

        // Consume nothing, examine all: TryRead finds nothing new, until bytes arrive.
        input.AdvanceTo(third.Buffer.Start, third.Buffer.End);
        Assert.False(input.TryRead(out _));
        d.Peer.Send(Encoding.ASCII.GetBytes("!"));
        ReadResult more = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal("cde!", Text(more.Buffer));
        input.AdvanceTo(more.Buffer.GetPosition(1));
        Assert.True(input.TryRead(out ReadResult tried));
        Assert.Equal("de!", Text(tried.Buffer));
        input.AdvanceTo(tried.Buffer.End);
        Assert.False(input.TryRead(out _));

        // Positions from a buffer that was consumed since.
        d.Peer.Send(Encoding.ASCII.GetBytes("f"));
        ReadResult fourth = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal("f", Text(fourth.Buffer));
        if (onLoop)
        {
            Assert.Throws<InvalidOperationException>(() => input.AdvanceTo(second.Buffer.End));
        }

        input.AdvanceTo(fourth.Buffer.End);

        // AdvanceTo without a read.
        Assert.Throws<InvalidOperationException>(() => input.AdvanceTo(fourth.Buffer.End));

        input.Complete();
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await input.ReadAsync());
        Assert.Throws<InvalidOperationException>(() => input.TryRead(out _));
    }

    /// <summary>
    /// CancelPendingRead from another thread ends a waiting read with IsCanceled (and no bytes); one that comes before
    /// the read cancels that read at once; the read's token makes it throw; reading goes on normally afterwards.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task CancelPendingRead_and_the_token_end_a_waiting_read_from_another_thread(EventLoopBackend backend, bool onLoop)
    {
        await using Dialed d = await Dialed.Open(backend, PipeConnectionTests.Options(onLoop));
        PipeReader input = d.Input;

        ValueTask<ReadResult> waiting = input.ReadAsync();
        Assert.False(waiting.IsCompleted);
        await Task.Run(input.CancelPendingRead);
        ReadResult canceled = await waiting.AsTask().WaitAsync(Timeout);
        Assert.True(canceled.IsCanceled);
        Assert.False(canceled.IsCompleted);
        Assert.True(canceled.Buffer.IsEmpty);
        input.AdvanceTo(canceled.Buffer.End);

        // Before the read: the next read returns canceled at once.
        await Task.Run(input.CancelPendingRead);
        ValueTask<ReadResult> next = input.ReadAsync();
        Assert.True(next.IsCompleted);
        ReadResult canceledAtOnce = await next;
        Assert.True(canceledAtOnce.IsCanceled);
        input.AdvanceTo(canceledAtOnce.Buffer.End);

        // The read's token.
        using (var cts = new CancellationTokenSource())
        {
            ValueTask<ReadResult> tokenRead = input.ReadAsync(cts.Token);
            Assert.False(tokenRead.IsCompleted);
            await Task.Run(cts.Cancel);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => tokenRead.AsTask().WaitAsync(Timeout));
        }

        // And reading goes on.
        d.Peer.Send(new byte[] { 7, 8, 9 });
        long total = 0;
        while (total < 3)
        {
            ReadResult result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
            Assert.False(result.IsCanceled);
            total = result.Buffer.Length;
            if (total == 3)
            {
                Assert.Equal(new byte[] { 7, 8, 9 }, result.Buffer.ToArray());
            }

            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    /// <summary>
    /// A slow reader on the thread pool (it consumes part of each buffer, examines all, and now and then yields) while the
    /// loop fills the input: the pause threshold bounds what arrives between two reads (receiving pauses and resumes), and every
    /// byte the peer sent arrives, in order. Each buffer is checked after the read returned, while the loop appends: it
    /// stays valid until AdvanceTo.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task A_slow_reader_on_the_pool_gets_every_byte_under_backpressure(EventLoopBackend backend, bool onLoop)
    {
        const int Pause = 64 * 1024;
        const int ReceiveBufferSize = 16 * 1024;
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = onLoop, InputPauseThreshold = Pause, InputResumeThreshold = Pause / 2 };
        using var loop = new RunningLoop(backend);
        using Socket listener = RunningLoop.PlainListener(backlog: 1);
        Task<Socket> accepting = listener.AcceptAsync();
        var connectOptions = new ConnectOptions { Connection = { ReceiveBufferSize = ReceiveBufferSize } };
        PipeConnection connection = await PipeConnection.ConnectAsync(loop.Loop, listener.LocalEndPoint!, options, connectOptions).WaitAsync(Timeout);
        using Socket peer = await accepting.WaitAsync(Timeout);

        byte[] payload = SocketTestExtensions.Pattern(11, 8 * 1024 * 1024 + 5);
        var sender = new Thread(() =>
        {
            var random = new Random(5);
            try
            {
                for (int offset = 0; offset < payload.Length;)
                {
                    int n = Math.Min(random.Next(1, 40_000), payload.Length - offset);
                    peer.Send(payload, offset, n, SocketFlags.None);
                    offset += n;
                }

                peer.Shutdown(SocketShutdown.Send);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // The test failed and closed the socket: its assertion says why.
            }
        }) { IsBackground = true };
        sender.Start();

        long largestNew = 0;
        long offsetRead = await Task.Run(async () =>
        {
            PipeReader input = connection.Transport.Input;
            var random = new Random(9);
            long offset = 0;
            long carried = 0;
            int reads = 0;
            while (true)
            {
                ReadResult result = await input.ReadAsync().ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = result.Buffer;
                // What arrived since the last read (the pause threshold counts bytes not yet examined, as a Pipe's does).
                largestNew = Math.Max(largestNew, buffer.Length - carried);
                if (++reads % 16 == 0)
                {
                    // Slow: the loop goes on appending while this buffer is held.
                    await Task.Yield();
                }

                // Consume a random part of it (the rest comes again with the next read), examine everything.
                long take = result.IsCompleted ? buffer.Length : random.Next(0, (int)buffer.Length + 1);
                ReadOnlySequence<byte> taken = buffer.Slice(0, take);
                int at = 0;
                foreach (ReadOnlyMemory<byte> segment in taken)
                {
                    if (!segment.Span.SequenceEqual(payload.AsSpan((int)offset + at, segment.Length)))
                    {
                        throw new InvalidDataException($"the bytes at {offset + at:N0} differ");
                    }

                    at += segment.Length;
                }

                offset += take;
                carried = buffer.Length - take;
                input.AdvanceTo(taken.End, buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }

            return offset;
        }).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(payload.Length, offsetRead);
        Assert.True(sender.Join(Timeout));
        Assert.InRange(largestNew, 1, Pause + ReceiveBufferSize);
        await connection.DisposeAsync().AsTask().WaitAsync(Timeout);
        Assert.Empty(loop.Errors);
    }

    /// <summary>
    /// The peer resets while a read waits (on a pool thread), with bytes examined but not consumed: the read throws the
    /// connection's IOException, and so does the next one at once, although bytes remain unread (as with a Pipe).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task A_peer_reset_in_the_middle_of_a_read_throws_from_the_read(EventLoopBackend backend, bool onLoop)
    {
        Dialed d = await Dialed.Open(backend, PipeConnectionTests.Options(onLoop));
        try
        {
            PipeReader input = d.Input;
            d.Peer.Send(new byte[] { 1, 2, 3 });
            Task<Exception?> reading = Task.Run(async () =>
            {
                try
                {
                    while (true)
                    {
                        ReadResult result = await input.ReadAsync().ConfigureAwait(false);
                        input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                        if (result.IsCompleted)
                        {
                            return null;
                        }
                    }
                }
                catch (Exception ex)
                {
                    return ex;
                }
            });

            LoopHarness.WaitUntil(() => d.Loop.Harness.Invoke(() => d.Connection.Connection.BytesReceived) == 3, "the bytes arrive");
            d.Peer.LingerState = new LingerOption(true, 0);
            d.Peer.Close();
            Exception? error = await reading.WaitAsync(Timeout);
            IOException io = Assert.IsType<IOException>(error);
            Assert.Equal(SocketError.ConnectionReset, Assert.IsType<SocketException>(io.InnerException).SocketErrorCode);
            IOException again = await Assert.ThrowsAsync<IOException>(async () => await input.ReadAsync());
            Assert.Same(io, again);
            input.Complete();
            await d.Connection.DisposeAsync().AsTask().WaitAsync(Timeout);
            Assert.Equal(ConnectionCloseReason.Reset, d.Connection.Connection.CloseReason);
            Assert.Empty(d.Loop.Errors);
        }
        finally
        {
            d.Loop.Dispose();
        }
    }

    /// <summary>
    /// The application completes its input from a pool thread: receiving stops (the loop pauses it, and what the peer
    /// sends next stays in the kernel), reads are refused (a read that waited meanwhile ends with the same exception),
    /// and the output still works.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public async Task Completing_the_input_from_another_thread_stops_receiving(EventLoopBackend backend, bool onLoop)
    {
        await using Dialed d = await Dialed.Open(backend, PipeConnectionTests.Options(onLoop));
        PipeReader input = d.Input;
        d.Peer.Send(new byte[] { 1 });
        ReadResult result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal(1, result.Buffer.Length);
        input.AdvanceTo(result.Buffer.End);
        if (onLoop)
        {
            // A read waiting while another thread completes the input ends (it does not wait for ever).
            ValueTask<ReadResult> waiting = input.ReadAsync();
            Assert.False(waiting.IsCompleted);
            await Task.Run(() => input.Complete());
            await Assert.ThrowsAsync<InvalidOperationException>(() => waiting.AsTask().WaitAsync(Timeout));
        }
        else
        {
            await Task.Run(() => input.Complete());
        }

        if (onLoop)
        {
            // At once: the completion reaches the loop in a posted step.
            LoopHarness.WaitUntil(() => d.Loop.Harness.Invoke(() => d.Connection.Connection.IsReceivingPaused), "receiving pauses");
        }

        // Bytes sent now are not read (with the Pipe, the loop reads one more chunk before its flush reports the completion).
        d.Peer.Send(new byte[] { 2, 3 });
        LoopHarness.WaitUntil(() => d.Loop.Harness.Invoke(() => d.Connection.Connection.IsReceivingPaused), "receiving pauses");
        long received = d.Loop.Harness.Invoke(() => d.Connection.Connection.BytesReceived);
        d.Peer.Send(new byte[1000]);
        d.Loop.Harness.Settle();
        Assert.Equal(received, d.Loop.Harness.Invoke(() => d.Connection.Connection.BytesReceived));
        if (onLoop)
        {
            Assert.Equal(1, received);
        }

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await input.ReadAsync());

        // The output still works.
        await d.Connection.Transport.Output.WriteAsync(new byte[] { 42 }).AsTask().WaitAsync(Timeout);
        Assert.Equal(new byte[] { 42 }, d.Peer.ReceiveExactly(1));
    }
}
