using System;
using System.IO.Pipelines;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

// The input: with continuations on the thread pool a pipe, which the loop writes what the socket received into and the
// application reads; with continuations on the loop the reader of PipeConnection.LoopInput.cs, which OnReceived feeds
// directly. Everything here runs on the loop thread, except OnInputFlushed (the pipe's continuation, on whichever thread
// let the flush complete), which only posts.
public sealed partial class PipeConnection
{
    private static readonly Action<object?> s_inputFlushedOnLoop = static state => ((PipeConnection)state!).InputFlushedOnLoop();

    /// <summary>The continuation of a flush that waited (created once per connection, so awaiting allocates nothing).</summary>
    private readonly Action _onInputFlushed;

    /// <summary>No more received bytes go into the input pipe: it was completed, or the application completed its reader.</summary>
    private bool _inputDone;

    /// <summary>The input writer was completed (it is completed once).</summary>
    private bool _inputWriterCompleted;

    /// <summary>A flush reached the pause threshold: receiving is paused until <see cref="_pendingFlush"/> completes.</summary>
    private bool _inputFlushPending;

    private ValueTask<FlushResult> _pendingFlush;

    /// <summary>
    /// Bytes arrived (<see cref="ConnectionHandler.OnReceived"/>): with continuations on the loop handed to the loop reader
    /// (a waiting read continues at once, inside this call); else copied into the input pipe and flushed. At the pause
    /// threshold, receiving pauses.
    /// </summary>
    internal void OnReceived(ReadOnlySpan<byte> data)
    {
        if (_inputDone)
        {
            // The application completed the input, or the connection is closing: what still arrives is discarded.
            return;
        }

        if (_loopInput is not null)
        {
            _loopInput.OnReceived(data);
            return;
        }

        PipeWriter writer = _input!.Writer;
        data.CopyTo(writer.GetSpan(data.Length));
        writer.Advance(data.Length);
        ValueTask<FlushResult> flush = writer.FlushAsync();
        if (_inputDone)
        {
            // The application completed the input or ended the connection meanwhile: nothing more to do here (in
            // particular no pause: a graceful close it started delivers what still arrives).
            return;
        }

        if (_inputFlushPending)
        {
            // Only while a graceful close delivers what had already arrived: the bytes are committed; the earlier flush
            // still decides when to resume.
            return;
        }

        if (flush.IsCompleted)
        {
            if (FlushEnded(flush))
            {
                StopInput();
            }

            return;
        }

        _inputFlushPending = true;
        _pendingFlush = flush;
        Connection.PauseReceiving();
        flush.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onInputFlushed);
    }

    /// <summary>Memory for the next receive (loop thread): the loop reader's, unless the input is done or a pipe takes the bytes.</summary>
    internal ArraySegment<byte> GetReceiveBuffer(int size) =>
        _loopInput is not null && !_inputDone ? _loopInput.GetReceiveBuffer(size) : default;

    /// <summary>The peer's end of stream: the input completes (the application reads what came before it first).</summary>
    internal void OnReadClosed() => CompleteInputWriter(null);

    /// <summary>Whether a completed flush says the application completed its reader (the pipe then takes nothing more).</summary>
    private static bool FlushEnded(ValueTask<FlushResult> flush)
    {
        try
        {
            return flush.GetAwaiter().GetResult().IsCompleted;
        }
        catch (Exception)
        {
            // The application completed its reader with an exception.
            return true;
        }
    }

    /// <summary>The pending flush completed (the application read down to the resume threshold, or completed): on to the loop.</summary>
    private void OnInputFlushed()
    {
        if (!Connection.Loop.TryPost(s_inputFlushedOnLoop, this))
        {
            // The loop is gone, and the connection with it.
            _inputFlushPending = false;
        }
    }

    /// <summary>On the loop: reads again, or, if the application completed the input, stops reading for good.</summary>
    private void InputFlushedOnLoop()
    {
        _inputFlushPending = false;
        bool ended = FlushEnded(_pendingFlush);
        _pendingFlush = default;
        if (_inputDone || _isClosed)
        {
            return;
        }

        if (ended)
        {
            StopInput();
        }
        else
        {
            Connection.ResumeReceiving();
        }
    }

    /// <summary>The application completed the input: receiving stays paused until the connection closes (see the docs: "Pipes").</summary>
    private void StopInput()
    {
        Connection.PauseReceiving();
        CompleteInputWriter(null);
    }

    /// <summary>
    /// Completes the input writer, once. Without <paramref name="error"/> the application reads the bytes already in the
    /// pipe, then <c>IsCompleted</c>; with one, its next <c>ReadAsync</c> throws it at once, even if bytes remain unread
    /// (the pipe's rule, as in Kestrel).
    /// </summary>
    private void CompleteInputWriter(Exception? error)
    {
        _inputDone = true;
        if (_inputWriterCompleted)
        {
            return;
        }

        _inputWriterCompleted = true;
        if (_loopInput is not null)
        {
            _loopInput.CompleteWriter(error);
            return;
        }

        if (_inputFlushPending)
        {
            // Its continuation posts InputFlushedOnLoop, which sees that the input is done.
            _input!.Writer.CancelPendingFlush();
        }

        _input!.Writer.Complete(error);
    }
}
