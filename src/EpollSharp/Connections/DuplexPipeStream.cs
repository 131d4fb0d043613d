using System;
using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>
/// A duplex <see cref="Stream"/> over an <see cref="IDuplexPipe"/> (<see cref="PipeConnection.AsStream"/>): reads take
/// from the input pipe, writes go to the output pipe and are flushed at once, disposing completes both (a graceful close
/// of the connection). The pipes' completion rules hold: a reset completes them with an <see cref="IOException"/>, which
/// reads and writes then throw.
/// </summary>
internal sealed class DuplexPipeStream : Stream
{
    private readonly PipeReader _input;
    private readonly PipeWriter _output;

    /// <summary>
    /// Taken around each write when writes may overlap: under an SslStream, which may answer the peer (a key update, a
    /// renegotiation) from inside a read while the application's data is being written; a PipeWriter takes one writer at
    /// a time. Null for the application's stream, whose writes are the application's to order.
    /// </summary>
    private readonly SemaphoreSlim? _writeLock;
    private int _disposed;

    public DuplexPipeStream(IDuplexPipe pipe, bool serializeWrites = false)
    {
        _input = pipe.Input;
        _output = pipe.Output;
        _writeLock = serializeWrites ? new SemaphoreSlim(1, 1) : null;
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

    /// <summary>Copies what the input holds (up to the buffer's length); 0 at the end of the stream.</summary>
    private async ValueTask<int> ReadCoreAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        ThrowIfDisposed();
        while (true)
        {
            ReadResult result = await _input.ReadAsync(cancellationToken).ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = result.Buffer;
            if (destination.IsEmpty && !buffer.IsEmpty)
            {
                // A zero-byte read (SslStream's and others' way to wait for data without a buffer): data is there; take none.
                _input.AdvanceTo(buffer.Start);
                return 0;
            }

            if (!buffer.IsEmpty)
            {
                int n = (int)Math.Min(buffer.Length, destination.Length);
                ReadOnlySequence<byte> taken = buffer.Slice(0, n);
                taken.CopyTo(destination.Span);
                _input.AdvanceTo(taken.End);
                return n;
            }

            _input.AdvanceTo(buffer.End);
            if (result.IsCompleted)
            {
                return 0;
            }

            if (result.IsCanceled)
            {
                throw new OperationCanceledException("The pending read was canceled (PipeReader.CancelPendingRead).");
            }
        }
    }

    /// <summary>Writes and flushes; waits while the output is at its pause threshold.</summary>
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
