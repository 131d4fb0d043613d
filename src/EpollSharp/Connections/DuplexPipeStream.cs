using System;
using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;

namespace EpollSharp.Connections;

/// <summary>
/// A duplex <see cref="Stream"/> over an <see cref="IDuplexPipe"/> (<see cref="PipeConnection.AsStream"/>): reads take
/// from the input pipe, writes go to the output pipe and are flushed at once, disposing completes both (a graceful close
/// of the connection). The pipes' completion rules hold: a reset completes them with an <see cref="IOException"/>, which
/// reads and writes then throw.
/// </summary>
internal sealed class DuplexPipeStream : Stream, IValueTaskSource<int>
{
    private readonly PipeReader _input;
    private readonly PipeWriter _output;

    /// <summary>
    /// Taken around each write when writes may overlap: under an SslStream, which may answer the peer (a key update, a
    /// renegotiation) from inside a read while the application's data is being written; a PipeWriter takes one writer at
    /// a time. Null for the application's stream, whose writes are the application's to order.
    /// </summary>
    private readonly SemaphoreSlim? _writeLock;
    private readonly Action _onReadReady;

    /// <summary>The input's reader continuations run on the loop thread (<see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>).</summary>
    private readonly bool _readsCompleteOnLoop;
    private int _disposed;

    /// <summary>The read waiting for the input (one at a time, as the input allows): its result, and what it reads into.</summary>
    private ManualResetValueTaskSourceCore<int> _read;
    private ConfiguredValueTaskAwaitable<ReadResult>.ConfiguredValueTaskAwaiter _readAwaiter;
    private Memory<byte> _readDestination;
    private CancellationToken _readCancellation;

    public DuplexPipeStream(IDuplexPipe pipe, bool readsCompleteOnLoop, bool serializeWrites = false)
    {
        _input = pipe.Input;
        _output = pipe.Output;
        _readsCompleteOnLoop = readsCompleteOnLoop;
        _writeLock = serializeWrites ? new SemaphoreSlim(1, 1) : null;
        _onReadReady = OnReadReady;
    }

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count)
    {
        CheckArguments(buffer, offset, count);
        return ReadCoreAsync(new Memory<byte>(buffer, offset, count), CancellationToken.None).AsTask().GetAwaiter().GetResult();
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        CheckArguments(buffer, offset, count);
        return ReadCoreAsync(new Memory<byte>(buffer, offset, count), cancellationToken).AsTask();
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        CheckArguments(buffer, offset, count);
        WriteCoreAsync(new ReadOnlyMemory<byte>(buffer, offset, count), CancellationToken.None).AsTask().GetAwaiter().GetResult();
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        CheckArguments(buffer, offset, count);
        return WriteCoreAsync(new ReadOnlyMemory<byte>(buffer, offset, count), cancellationToken).AsTask();
    }

#if NETCOREAPP2_1_OR_GREATER
    public override int Read(Span<byte> buffer)
    {
        byte[] rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            int n = ReadCoreAsync(rented.AsMemory(0, buffer.Length), CancellationToken.None).AsTask().GetAwaiter().GetResult();
            rented.AsSpan(0, n).CopyTo(buffer);
            return n;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => ReadCoreAsync(buffer, cancellationToken);

    public override void Write(ReadOnlySpan<byte> buffer) =>
        WriteCoreAsync(buffer.ToArray(), CancellationToken.None).AsTask().GetAwaiter().GetResult();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => WriteCoreAsync(buffer, cancellationToken);

    public override ValueTask DisposeAsync()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
        return default;
    }
#endif

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            // The output first: what was flushed is sent, then FIN; then the input (nothing more is read).
            _output.Complete();
            _input.Complete();
        }

        base.Dispose(disposing);
    }

    private static void CheckArguments(byte[] buffer, int offset, int count)
    {
        if (buffer is null)
        {
            throw new ArgumentNullException(nameof(buffer));
        }

        if (offset < 0 || count < 0 || count > buffer.Length - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(count), "offset and count must lie within the buffer.");
        }
    }

    /// <summary>
    /// Copies what the input holds (up to the buffer's length); 0 at the end of the stream. A read that has to wait (as
    /// every read of an echo does) allocates nothing on .NET 6 and later:
    /// <list type="bullet">
    /// <item>When the input's reader continuations run on the loop (<see cref="_readsCompleteOnLoop"/>), it completes
    /// through this stream itself (<see cref="IValueTaskSource{TResult}"/>), and its caller's continuation runs right
    /// there, on the loop thread, as with <see cref="PipeConnection.Transport"/>. A pooled async state machine would
    /// instead post it to the loop's synchronization context, which the caller captured, and allocate for that.</item>
    /// <item>Otherwise a pooled async state machine waits (the thread pool runs those without allocating, which it does
    /// not for other callbacks).</item>
    /// </list>
    /// </summary>
    private ValueTask<int> ReadCoreAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        try
        {
            ThrowIfDisposed();
            while (true)
            {
                ValueTask<ReadResult> pending = _input.ReadAsync(cancellationToken);
                if (!pending.IsCompleted)
                {
                    if (!_readsCompleteOnLoop)
                    {
                        return ReadWaitingAsync(pending, destination, cancellationToken);
                    }

                    _readDestination = destination;
                    _readCancellation = cancellationToken;
                    _read.Reset();
                    _readAwaiter = pending.ConfigureAwait(false).GetAwaiter();
                    _readAwaiter.UnsafeOnCompleted(_onReadReady);
                    return new ValueTask<int>(this, _read.Version);
                }

                if (TryTake(pending.Result, destination, out int n))
                {
                    return new ValueTask<int>(n);
                }
            }
        }
        catch (Exception ex)
        {
            return new ValueTask<int>(Task.FromException<int>(ex));
        }
    }

    /// <summary>A read that waits for the input, with the input's reader continuations on the thread pool.</summary>
#if NET6_0_OR_GREATER
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
#endif
    private async ValueTask<int> ReadWaitingAsync(ValueTask<ReadResult> pending, Memory<byte> destination, CancellationToken cancellationToken)
    {
        ReadResult result = await pending.ConfigureAwait(false);
        int n;
        while (!TryTake(result, destination, out n))
        {
            result = await _input.ReadAsync(cancellationToken).ConfigureAwait(false);
        }

        return n;
    }

    /// <summary>The pending read of the input completed (where the input's reader continuations run).</summary>
    private void OnReadReady()
    {
        int n;
        try
        {
            ReadResult result = _readAwaiter.GetResult();
            _readAwaiter = default;
            while (!TryTake(result, _readDestination, out n))
            {
                ValueTask<ReadResult> pending = _input.ReadAsync(_readCancellation);
                if (!pending.IsCompleted)
                {
                    _readAwaiter = pending.ConfigureAwait(false).GetAwaiter();
                    _readAwaiter.UnsafeOnCompleted(_onReadReady);
                    return;
                }

                result = pending.Result;
            }
        }
        catch (Exception ex)
        {
            _readAwaiter = default;
            _readDestination = default;
            _readCancellation = default;
            _read.SetException(ex);
            return;
        }

        _readDestination = default;
        _readCancellation = default;
        _read.SetResult(n);
    }

    /// <summary>
    /// Takes what <paramref name="result"/> holds into <paramref name="destination"/>: true with the count (0 at the end of
    /// the stream, or for a zero-byte read that found data), false when the input must be read again.
    /// </summary>
    private bool TryTake(ReadResult result, Memory<byte> destination, out int taken)
    {
        ReadOnlySequence<byte> buffer = result.Buffer;
        if (destination.IsEmpty && !buffer.IsEmpty)
        {
            // A zero-byte read (SslStream's and others' way to wait for data without a buffer): data is there; take none.
            _input.AdvanceTo(buffer.Start);
            taken = 0;
            return true;
        }

        if (!buffer.IsEmpty)
        {
            int n = (int)Math.Min(buffer.Length, destination.Length);
            ReadOnlySequence<byte> slice = buffer.Slice(0, n);
            slice.CopyTo(destination.Span);
            _input.AdvanceTo(slice.End);
            taken = n;
            return true;
        }

        _input.AdvanceTo(buffer.End);
        if (result.IsCompleted)
        {
            taken = 0;
            return true;
        }

        if (result.IsCanceled)
        {
            throw new OperationCanceledException("The pending read was canceled (PipeReader.CancelPendingRead).");
        }

        taken = 0;
        return false;
    }

    int IValueTaskSource<int>.GetResult(short token) => _read.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _read.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        // No synchronization context: the continuation runs where the read completed (see ReadCoreAsync).
        _read.OnCompleted(continuation, state, token, flags & ~ValueTaskSourceOnCompletedFlags.UseSchedulingContext);

    /// <summary>Writes and flushes; waits while the output is at its pause threshold (with a pooled state machine, .NET 6 and later).</summary>
#if NET6_0_OR_GREATER
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
#endif
    private async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken)
    {
        ThrowIfDisposed();
        if (_writeLock is null)
        {
            Check(await _output.WriteAsync(source, cancellationToken).ConfigureAwait(false));
            return;
        }

        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            Check(await _output.WriteAsync(source, cancellationToken).ConfigureAwait(false));
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>A flush that found the output's reader completed: the connection is closing, and the bytes will not be sent.</summary>
    private static void Check(FlushResult result)
    {
        if (result.IsCanceled)
        {
            throw new OperationCanceledException("The pending flush was canceled (PipeWriter.CancelPendingFlush).");
        }

        if (result.IsCompleted)
        {
            throw new IOException("The connection is closed: the data written was not sent.");
        }
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            throw new ObjectDisposedException(nameof(DuplexPipeStream));
        }
    }
}
