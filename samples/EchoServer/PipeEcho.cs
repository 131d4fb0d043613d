using System;
using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Connections;

namespace EchoServer;

/// <summary>
/// The echo as an <c>async</c> application of a <see cref="PipeConnectionHandler"/> (<c>--api pipe</c> and
/// <c>--api stream</c>), with TLS when <c>--tls</c> is given. Backpressure is the pipes': <c>FlushAsync</c> (and the
/// stream's <c>WriteAsync</c>) waits while the output is at its pause threshold, and while the application does not read,
/// the input fills to its threshold and the loop stops reading the socket. The continuations run on the loops
/// (<see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>; the echo never blocks), or on the thread pool with
/// <c>--pipe-continuations pool</c>. On the server's graceful shutdown
/// (<see cref="PipeConnection.ConnectionClosedRequested"/>) the application echoes what it has read and returns, which closes
/// the connection (FIN), as <see cref="EchoHandler"/> does through <see cref="ConnectionHandler.OnShutdownRequested"/>.
/// </summary>
internal sealed class PipeEcho
{
    private const int StreamBufferSize = 16 * 1024;
    private long _bytesEchoed;

    /// <summary>Application bytes echoed (decrypted ones with TLS) by the connections whose application has finished.</summary>
    public long BytesEchoed => Interlocked.Read(ref _bytesEchoed);

    /// <summary>
    /// The handler for <paramref name="api"/> (<see cref="EchoApi.Pipe"/> or <see cref="EchoApi.Stream"/>), with TLS when
    /// <paramref name="tls"/> is given, its continuations on the loops when <paramref name="continuationsOnLoop"/> (else on the thread pool).
    /// </summary>
    public PipeConnectionHandler CreateHandler(EchoApi api, TlsServerOptions? tls, bool continuationsOnLoop)
    {
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = continuationsOnLoop, TlsServer = tls };
        return new PipeConnectionHandler(api == EchoApi.Stream ? StreamEchoAsync : PipeEchoAsync, options);
    }

    /// <summary>The canonical pipe echo: each segment read is written to the output, consumed, then flushed. Allocates nothing per message.</summary>
    private async Task PipeEchoAsync(PipeConnection connection)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        long echoed = 0;

        // A shutdown request turns the waiting read into a canceled one, which returns what the input holds: echoed, then the end.
        using CancellationTokenRegistration registration = connection.ConnectionClosedRequested.Register(static state => ((PipeReader)state!).CancelPendingRead(), input);
        try
        {
            while (true)
            {
                ReadResult result = await input.ReadAsync();
                ReadOnlySequence<byte> buffer = result.Buffer;
                long length = buffer.Length;
                if (buffer.IsSingleSegment)
                {
                    // The usual case (a message in one block of the input): no enumerator.
                    output.Write(buffer.FirstSpan);
                }
                else
                {
                    foreach (ReadOnlyMemory<byte> segment in buffer)
                    {
                        output.Write(segment.Span);
                    }
                }

                input.AdvanceTo(buffer.End);
                FlushResult flush = await output.FlushAsync();
                if (flush.IsCompleted)
                {
                    return; // the connection is closing: what was just written is not sent
                }

                echoed += length;
                if (result.IsCompleted || result.IsCanceled)
                {
                    return; // the peer's FIN, or the server's shutdown: returning closes the connection gracefully
                }
            }
        }
        finally
        {
            Interlocked.Add(ref _bytesEchoed, echoed);
        }
    }

    /// <summary>The echo through <see cref="PipeConnection.AsStream"/>: ReadAsync into a pooled buffer, WriteAsync it back.</summary>
    private async Task StreamEchoAsync(PipeConnection connection)
    {
        CancellationToken closeRequested = connection.ConnectionClosedRequested;
        using CancellationTokenRegistration registration = closeRequested.Register(static state => ((PipeReader)state!).CancelPendingRead(), connection.Transport.Input);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(StreamBufferSize);
        long echoed = 0;
        try
        {
            await using Stream stream = connection.AsStream();
            while (!closeRequested.IsCancellationRequested)
            {
                int n;
                try
                {
                    n = await stream.ReadAsync(buffer.AsMemory());
                }
                catch (OperationCanceledException) when (closeRequested.IsCancellationRequested)
                {
                    break; // the server's shutdown, with nothing left to echo
                }

                if (n == 0)
                {
                    break; // the peer's FIN
                }

                await stream.WriteAsync(buffer.AsMemory(0, n));
                echoed += n;
            }
        }
        finally
        {
            // Disposing the stream (above) ended the connection gracefully: what was written is sent, then FIN.
            Interlocked.Add(ref _bytesEchoed, echoed);
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
