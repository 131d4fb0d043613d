#if NET5_0_OR_GREATER
using System;
using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Net.Security;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

// TLS over the pipes, as Kestrel's TLS middleware does it: an SslStream over a stream view of the raw pipes runs the
// handshake; then two pumps move bytes between that SslStream and a second pair of pipes, which becomes the application's
// Transport. The connection and the loop know nothing of it: they see the raw pipes only.
public sealed partial class PipeConnection
{
    /// <summary>The most one write to the SslStream takes: a full TLS record.</summary>
    private const int TlsRecordSize = 16 * 1024;

    private static readonly Action<object?> s_abort = static state => ((PipeConnection)state!).Abort();

    /// <summary>
    /// Cancels the output pump's read from a posted step of its own: the pump's continuation may run at once on the loop
    /// thread (<see cref="InlineOnLoopPipeScheduler"/>), and it must not run inside the loop's handling of the close.
    /// </summary>
    private static readonly Action<object?> s_cancelTlsOutput = static state => ((PipeReader)state!).CancelPendingRead();

    private SslStream? _ssl;

    /// <summary>The TLS output pump's end of the application's output pipe; canceled when the connection closes.</summary>
    private PipeReader? _tlsOutputReader;

    /// <summary>Set (from the loop) when the connection closed, for the TLS pumps.</summary>
    private volatile bool _closedForTls;

    /// <summary>The pumps still running; the last one out disposes <see cref="_ssl"/>.</summary>
    private int _tlsPumps;

    /// <summary>
    /// What the TLS handshake negotiated; <see langword="null"/> without TLS (or before the handshake completed: the
    /// application and <see cref="ConnectAsync"/>'s caller only see a connection whose handshake succeeded). Not in the
    /// netstandard2.0 build.
    /// </summary>
    public TlsConnectionInfo? Tls { get; private set; }

    /// <summary>The handshake (completes when the application may start; faults as the handshake did); null without TLS.</summary>
    internal Task? TlsReady { get; private set; }

    /// <summary>Starts the handshake (loop thread; the output pump already runs).</summary>
    private void StartTls(TlsOptions options, Func<PipeConnection, Task>? application)
    {
        Task ready = Task.Run(() => HandshakeAsync(options, application));
        TlsReady = ready;

        // Observed here, so that a failure nobody awaits (an accepted connection) is not an unobserved task exception;
        // it was reported to OnHandshakeFailed.
        ready.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task HandshakeAsync(TlsOptions options, Func<PipeConnection, Task>? application)
    {
        var raw = new DuplexPipeStream(new DuplexPipe(InputReader, OutputWriter), readsCompleteOnLoop: _continuationsOnLoop, serializeWrites: true);
        var ssl = new SslStream(raw, leaveInnerStreamOpen: true);
        using var deadline = new CancellationTokenSource();
        Exception? failure = null;
        CancellationTokenRegistration onDeadline = default;
        try
        {
            if (options.HandshakeTimeout != Timeout.InfiniteTimeSpan)
            {
                // At the deadline the connection is reset, whatever the SslStream does with its token.
                onDeadline = deadline.Token.Register(s_abort, this);
                deadline.CancelAfter(options.HandshakeTimeout);
            }

            await options.AuthenticateAsync(ssl, deadline.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            failure = ex;
        }

        onDeadline.Dispose();
        if (deadline.IsCancellationRequested)
        {
            failure = new TimeoutException($"The TLS handshake did not complete within {options.HandshakeTimeout.TotalMilliseconds:0} ms.", failure);
        }
        else if (failure is null && _closedForTls)
        {
            failure = _closeError ?? new IOException("The connection closed during the TLS handshake.");
        }

        if (failure is not null)
        {
            // Reset (the raw output completed with an exception resets it too, should the abort come second), and let go
            // of the SslStream and the raw pipes' other ends.
            Abort();
            ssl.Dispose();
            OutputWriter.Complete(new IOException("The TLS handshake failed.", failure));
            InputReader.Complete();
            Report(options, failure);
            ExceptionDispatchInfo.Capture(failure).Throw();
        }

        _ssl = ssl;
        Tls = new TlsConnectionInfo(ssl);

        // The application's pipes, with the pumps' ends where the application's run. With RunContinuationsOnLoop a message
        // then stays on the loop thread from the socket through the SslStream, the application and back (the pumps' ends
        // on the thread pool cost two thread hops and a wake-up of the loop per message); and each pipe's reader runs at
        // once when the flush that wakes it is on the loop thread: the pump's flush of the decrypted bytes runs the
        // application, whose flush runs the output pump. So the raw input's continuation takes a message through the
        // SslStream, the application and the SslStream again in one go, one connection after the other, instead of in
        // three posted steps, each after every other connection's.
        PipeScheduler scheduler = _continuationsOnLoop ? new LoopPipeScheduler(Connection.Loop) : PipeScheduler.ThreadPool;
        PipeScheduler readerScheduler = _continuationsOnLoop ? new InlineOnLoopPipeScheduler(Connection.Loop, scheduler) : PipeScheduler.ThreadPool;
        var input = new Pipe(new PipeOptions(
            pool: _options.MemoryPool ?? PipeBlockPool.Instance,
            readerScheduler: readerScheduler,
            writerScheduler: scheduler,
            pauseWriterThreshold: _options.InputPauseThreshold,
            resumeWriterThreshold: _options.InputPauseThreshold == 0 ? 0 : _options.InputResumeThreshold,
            useSynchronizationContext: false));
        var output = new Pipe(new PipeOptions(
            pool: _options.MemoryPool ?? PipeBlockPool.Instance,
            readerScheduler: readerScheduler,
            writerScheduler: scheduler,
            pauseWriterThreshold: _options.OutputPauseThreshold,
            resumeWriterThreshold: _options.OutputPauseThreshold == 0 ? 0 : _options.OutputResumeThreshold,
            useSynchronizationContext: false));
        Volatile.Write(ref _tlsOutputReader, output.Reader);
        Transport = new DuplexPipe(input.Reader, output.Writer);
        _tlsPumps = 2;
        _ = PumpTlsInputAsync(ssl, input.Writer);
        _ = PumpTlsOutputAsync(ssl, output.Reader);
        // Either this sees the close, or OnClosedTls sees the output reader (the barriers order each side's store before its load).
        Interlocked.MemoryBarrier();
        if (_closedForTls)
        {
            // Closed while the pipes were being made: OnClosedTls may have missed the output reader.
            output.Reader.CancelPendingRead();
        }

        StartApplication(application);
    }

    /// <summary>Reports a failed handshake to <see cref="TlsOptions.OnHandshakeFailed"/>; its exception goes to the loop.</summary>
    private void Report(TlsOptions options, Exception failure)
    {
        Action<PipeConnection, Exception>? callback = options.OnHandshakeFailed;
        if (callback is null)
        {
            return;
        }

        try
        {
            callback(this, failure);
        }
        catch (Exception ex)
        {
            Connection.Loop.TryPost(static e => ExceptionDispatchInfo.Capture((Exception)e!).Throw(), ex);
        }
    }

    /// <summary>
    /// Decrypts into the application's input until the peer's end of stream (the input completes), an error (it completes
    /// with the connection's <see cref="IOException"/>), or the application completing its input (the raw input is
    /// completed too, so the loop stops reading the socket).
    /// </summary>
    private async Task PumpTlsInputAsync(SslStream ssl, PipeWriter input)
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                // Wait for a record with a zero-byte read, holding no buffer meanwhile (nor does the SslStream, which
                // passes the zero-byte read on to the raw stream): an idle connection keeps no 16 KiB block, and the
                // blocks of many connections stay few and warm in the cache.
                await ssl.ReadAsync(Memory<byte>.Empty).ConfigureAwait(false);
                Memory<byte> memory = input.GetMemory(TlsRecordSize);
                int n = await ssl.ReadAsync(memory).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                input.Advance(n);
                FlushResult flush = await input.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            error = PumpError(ex);
        }

        input.Complete(error);
        InputReader.Complete();
        PumpDone();
    }

    /// <summary>
    /// Encrypts what the application flushes. When the application completes its output: close_notify, then the raw
    /// output completes (FIN after what was sent). With an exception: the connection is reset. When the connection
    /// closes: the application's output completes with the connection's error.
    /// </summary>
    private async Task PumpTlsOutputAsync(SslStream ssl, PipeReader output)
    {
        byte[]? record = null;
        Exception? rawError = null;
        try
        {
            while (true)
            {
                ReadResult result = await output.ReadAsync().ConfigureAwait(false);
                if (_closedForTls)
                {
                    output.AdvanceTo(result.Buffer.End);
                    output.Complete(_closeError);
                    break;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                if (buffer.IsEmpty)
                {
                    // A flush of nothing, or the completion alone: no empty record.
                }
                else if (buffer.IsSingleSegment)
                {
                    await ssl.WriteAsync(buffer.First).ConfigureAwait(false);
                }
                else
                {
                    // Gather small segments into full records.
                    record ??= ArrayPool<byte>.Shared.Rent(TlsRecordSize);
                    while (!buffer.IsEmpty)
                    {
                        int n = (int)Math.Min(buffer.Length, record.Length);
                        buffer.Slice(0, n).CopyTo(record);
                        await ssl.WriteAsync(record.AsMemory(0, n)).ConfigureAwait(false);
                        buffer = buffer.Slice(n);
                    }
                }

                output.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    await ssl.ShutdownAsync().ConfigureAwait(false);
                    output.Complete();
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            // The application completed its output with an exception (reset), or a write failed because the connection
            // closed (or the TLS layer failed: reset too).
            Exception error = PumpError(ex);
            output.Complete(error);
            rawError = error;
        }

        if (record is not null)
        {
            ArrayPool<byte>.Shared.Return(record);
        }

        // Without an error: FIN after what was sent (the raw pump closes gracefully). With one: the raw pump resets.
        OutputWriter.Complete(rawError);
        PumpDone();
    }

    /// <summary>
    /// The exception a pump completes the application's pipe with: the connection's own, once it closed (so that an
    /// application letting it escape is not taken for a faulting one); else the failure as an <see cref="IOException"/>,
    /// and the connection is reset.
    /// </summary>
    private Exception PumpError(Exception ex)
    {
        if (_closedForTls)
        {
            return _closeError ?? new IOException("The connection is closed.", ex);
        }

        Abort();
        return ex as IOException ?? new IOException("The TLS layer failed: " + ex.Message, ex);
    }

    private void PumpDone()
    {
        if (Interlocked.Decrement(ref _tlsPumps) == 0)
        {
            _ssl?.Dispose();
        }
    }

    /// <summary>The connection closed (loop thread, after both raw pipes completed): stops the TLS output pump.</summary>
    partial void OnClosedTls()
    {
        _closedForTls = true;
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _tlsOutputReader) is { } reader && !Connection.Loop.TryPost(s_cancelTlsOutput, reader))
        {
            reader.CancelPendingRead();
        }
    }
}
#endif
