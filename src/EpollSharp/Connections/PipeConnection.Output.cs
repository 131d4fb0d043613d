using System;
using System.Buffers;
using System.IO.Pipelines;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

// The output pipe: the application writes, the loop reads and hands the bytes to Connection.Write. The pump runs on the
// loop thread; OnOutputReadable (the pipe's continuation, on the thread that flushed) runs it there at once, or posts to
// the loop from another thread.
public sealed partial class PipeConnection
{
    /// <summary>The most one <see cref="Connection.Write(ReadOnlySpan{byte})"/> call takes, so that backpressure is checked often and the backlog stays within <see cref="ConnectionOptions.HighWatermark"/> plus this.</summary>
    private const int MaxWriteChunk = 64 * 1024;

    /// <summary>Where <see cref="Consume"/> gathers a chunk that spans several of the pipe's blocks: one per loop thread (the pump runs only there), made at its first use.</summary>
    [ThreadStatic]
    private static byte[]? t_writeScratch;

    private static readonly Action<object?> s_outputReadableOnLoop = static state => ((PipeConnection)state!).OutputReadableOnLoop();

    /// <summary>The continuation of a read that waited (created once per connection, so awaiting allocates nothing).</summary>
    private readonly Action _onOutputReadable;

    private static byte[] WriteScratch => t_writeScratch ??= new byte[MaxWriteChunk];

    private PumpState _pump;

    /// <summary>The connection closed: the pump completes the output reader at its next step (with <see cref="_closeError"/>).</summary>
    private bool _outputStopRequested;

    private ValueTask<ReadResult> _pendingRead;

    private enum PumpState
    {
        /// <summary>On the loop's stack now (reading or writing).</summary>
        Running,

        /// <summary>A <c>ReadAsync</c> waits for the application to flush.</summary>
        WaitingForData,

        /// <summary>The connection's backlog is at its high watermark: waiting for <see cref="ConnectionHandler.OnWriteResumed"/>.</summary>
        WaitingForResume,

        /// <summary>The output reader is completed; the pump is over.</summary>
        Done,
    }

    /// <summary>The backlog drained to the low watermark: pump again, if the pump was waiting for it.</summary>
    internal void OnWriteResumed()
    {
        if (_loopOutput is not null)
        {
            _loopOutput.OnWriteResumed();
            return;
        }

        if (_pump == PumpState.WaitingForResume)
        {
            PumpOutput();
        }
    }

    /// <summary>Reads the output pipe and writes what it holds until it is empty, the backlog is full, or the output ends.</summary>
    private void PumpOutput()
    {
        if (_loopOutput is not null)
        {
            // No pump: the writer hands its flushes to the connection itself.
            return;
        }

        _pump = PumpState.Running;
        while (true)
        {
            if (_outputStopRequested)
            {
                FinishOutput(_closeError);
                return;
            }

            if (Connection.IsWritePaused)
            {
                _pump = PumpState.WaitingForResume;
                return;
            }

            ValueTask<ReadResult> read;
            try
            {
                read = _output!.Reader.ReadAsync();
                if (!read.IsCompleted)
                {
                    _pump = PumpState.WaitingForData;
                    _pendingRead = read;
                    read.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onOutputReadable);
                    return;
                }
            }
            catch (Exception)
            {
                OutputFaulted();
                return;
            }

            if (!Consume(read))
            {
                return;
            }
        }
    }

    /// <summary>
    /// The waiting read completed (the application flushed or completed, or the pump was stopped). On the loop thread (the
    /// application's flush with continuations on the loop) the pump sends at once, inside that flush: one send per flush
    /// with no post to the loop, as a callback handler's <c>Write</c>. From another thread, or when the connection
    /// closed (the pump was canceled inside the loop's handling of the close), on to the loop.
    /// </summary>
    private void OnOutputReadable()
    {
        if (!_outputStopRequested && Connection.Loop.IsOnLoopThread)
        {
            OutputReadableOnLoop();
            return;
        }

        if (!Connection.Loop.TryPost(s_outputReadableOnLoop, this))
        {
            // The loop is gone, and the connection with it: nothing will read the output any more.
            _pump = PumpState.Done;
            _output!.Reader.Complete(_closeError);
        }
    }

    private void OutputReadableOnLoop()
    {
        if (_pump != PumpState.WaitingForData)
        {
            return;
        }

        ValueTask<ReadResult> read = _pendingRead;
        _pendingRead = default;
        _pump = PumpState.Running;
        if (Consume(read))
        {
            PumpOutput();
        }
    }

    /// <summary>Writes one read's bytes to the connection, as far as backpressure lets it. False when the pump is over, or waits.</summary>
    private bool Consume(ValueTask<ReadResult> read)
    {
        ReadResult result;
        try
        {
            result = read.GetAwaiter().GetResult();
        }
        catch (Exception)
        {
            OutputFaulted();
            return false;
        }

        ReadOnlySequence<byte> buffer = result.Buffer;
        if (_outputStopRequested)
        {
            _output!.Reader.AdvanceTo(buffer.End);
            FinishOutput(_closeError);
            return false;
        }

        // One Write (one send) per chunk of up to MaxWriteChunk bytes: the pipe's blocks are small (4 KiB), so a message
        // that spans several is gathered into the loop thread's scratch buffer first rather than sent block by block.
        long written = 0;
        bool refused = false;
        ReadOnlySequence<byte> rest = buffer;
        while (!rest.IsEmpty && !Connection.IsWritePaused)
        {
            ReadOnlySpan<byte> chunk = rest.First.Span;
            if (chunk.Length < MaxWriteChunk && !rest.IsSingleSegment)
            {
                Span<byte> gathered = WriteScratch.AsSpan(0, (int)Math.Min(rest.Length, MaxWriteChunk));
                rest.Slice(0, gathered.Length).CopyTo(gathered);
                chunk = gathered;
            }
            else if (chunk.Length > MaxWriteChunk)
            {
                chunk = chunk.Slice(0, MaxWriteChunk);
            }

            if (!Connection.Write(chunk))
            {
                refused = true;
                break;
            }

            written += chunk.Length;
            rest = rest.Slice(chunk.Length);
        }

        bool all = written == buffer.Length;
        _output!.Reader.AdvanceTo(all ? buffer.End : buffer.GetPosition(written));
        if (_outputStopRequested || refused)
        {
            // The connection closed (inside a Write, whose OnClosed stopped the output), or its output is shut.
            FinishOutput(_closeError);
            return false;
        }

        if (all && result.IsCompleted)
        {
            // The application completed the output and everything is handed over: close gracefully.
            FinishOutput(null);
            CloseFromOutput();
            return false;
        }

        if (!all)
        {
            // Backpressure: the rest waits in the pipe (the application's FlushAsync waits once it holds the threshold).
            _pump = PumpState.WaitingForResume;
            return false;
        }

        return true;
    }

    /// <summary>The application completed the output with an exception: reset, as Kestrel's abort does.</summary>
    private void OutputFaulted()
    {
        FinishOutput(_closeError);
        AbortOnLoop();
    }

    /// <summary>
    /// The application completed the output and all of it went to the connection: the input completes (no more is added)
    /// and the connection closes gracefully, reading and discarding what still arrives (<see cref="Connection.Close()"/>).
    /// </summary>
    private void CloseFromOutput()
    {
        if (Connection.IsClosed)
        {
            return;
        }

        CompleteInputWriter(null);
        if (Connection.IsReceivingPaused)
        {
            // A graceful close delivers what had arrived before it shuts down: with receiving paused it would wait.
            Connection.ResumeReceiving();
        }

        Connection.Close();
    }

    /// <summary>The connection closed: stops the pump (now if it waits for the backlog, or through its pending read).</summary>
    private void StopOutput()
    {
        _outputStopRequested = true;
        if (_loopOutput is not null)
        {
            _loopOutput.OnConnectionClosed(_closeError);
            return;
        }

        switch (_pump)
        {
            case PumpState.WaitingForResume:
                FinishOutput(_closeError);
                break;
            case PumpState.WaitingForData:
                // Its continuation posts OutputReadableOnLoop, which finishes the output.
                _output!.Reader.CancelPendingRead();
                break;
        }

        // Running: the pump is below on this stack (a Write closed the connection) and sees the flag when the Write returns.
    }

    /// <summary>Completes the output reader, once: the application's flushes then end with <c>IsCompleted</c>, or throw <paramref name="error"/>.</summary>
    private void FinishOutput(Exception? error)
    {
        if (_pump == PumpState.Done)
        {
            return;
        }

        _pump = PumpState.Done;
        _output!.Reader.Complete(error);
    }
}
