using System;
using System.IO;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.AspNetCore;

/// <summary>
/// The output pipe as Kestrel expects a transport's output to behave: when the connection was reset or failed, a flush
/// reports <see cref="FlushResult.IsCompleted"/> (nothing more will be sent) instead of throwing the pipe's
/// <see cref="IOException"/>, so that the application learns of it through <c>RequestAborted</c> (fired by the connection's
/// <c>ConnectionClosed</c>), as with the socket transport, rather than through an exception from a response write.
/// </summary>
internal sealed class TransportOutput : PipeWriter
{
    private static readonly FlushResult s_completed = new(isCanceled: false, isCompleted: true);
    private readonly PipeWriter _inner;

    public TransportOutput(PipeWriter inner) => _inner = inner;

    public override bool CanGetUnflushedBytes => _inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => _inner.UnflushedBytes;

    public override void Advance(int bytes) => _inner.Advance(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => _inner.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => _inner.GetSpan(sizeHint);

    public override void CancelPendingFlush() => _inner.CancelPendingFlush();

    public override void Complete(Exception? exception = null) => _inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        ValueTask<FlushResult> flush;
        try
        {
            flush = _inner.FlushAsync(cancellationToken);
        }
        catch (IOException)
        {
            return new ValueTask<FlushResult>(s_completed);
        }

        return flush.IsCompletedSuccessfully ? flush : Awaited(flush);
    }

    public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        ValueTask<FlushResult> write;
        try
        {
            write = _inner.WriteAsync(source, cancellationToken);
        }
        catch (IOException)
        {
            return new ValueTask<FlushResult>(s_completed);
        }

        return write.IsCompletedSuccessfully ? write : Awaited(write);
    }

    private static async ValueTask<FlushResult> Awaited(ValueTask<FlushResult> flush)
    {
        try
        {
            return await flush.ConfigureAwait(false);
        }
        catch (IOException)
        {
            return s_completed;
        }
    }
}
