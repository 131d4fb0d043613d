using System;
using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    private static readonly Action<object?> s_continueReceiving = static state => ((Connection)state!).ContinueReceiving();

    /// <summary>
    /// Sends <paramref name="data"/>: at once as far as the kernel takes it, the rest copied to the connection's backlog
    /// and sent when the socket is writable. Allocates nothing when the kernel takes everything.
    /// </summary>
    /// <param name="data">The bytes. They are copied (or sent) before this returns, so the span may be reused at once.</param>
    /// <returns>
    /// <see langword="true"/> if the bytes were sent or buffered. <see langword="false"/> if they were refused: the connection is
    /// closed, its sending side is shut down or being shut down (<see cref="IsWriteClosed"/>: after <see cref="Shutdown"/>, or
    /// once a graceful <see cref="Close()"/> has delivered the input that had already arrived), a send failed (the connection
    /// then ends with that error), or buffering them would exceed <see cref="ConnectionOptions.MaxBufferedBytes"/> (the
    /// connection is then reset with <see cref="ConnectionCloseReason.OutputLimitExceeded"/>).
    /// </returns>
    /// <remarks>
    /// After <see cref="Close()"/>, writes are still accepted while the close delivers the input that had already arrived
    /// (an <see cref="ConnectionHandler.OnReceived"/> that calls <see cref="Close()"/> can still answer, and so can the calls
    /// for the rest of that input) and from the continuations of offloads that were pending; the bytes are sent before the
    /// FIN. Once that delivery is over, <see cref="IsWriteClosed"/> is true and writes are refused.
    /// </remarks>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public bool Write(ReadOnlySpan<byte> data)
    {
        ThrowIfNotOnLoop();
        if (_closed || _outputShutdownRequested)
        {
            return false;
        }

        if (data.IsEmpty)
        {
            return true;
        }

        Enter();
        try
        {
            if (_sendQueue is null || _sendQueue.IsEmpty)
            {
                int sent = _transfer.Send(data, out SocketError error);
                if (sent > 0)
                {
                    Volatile.Write(ref _bytesSent, _bytesSent + sent);
                    _lastActivity = Stopwatch.GetTimestamp();
                }

                if (error != SocketError.Success && error != SocketError.WouldBlock)
                {
                    CloseOnError(error);
                    return false;
                }

                if (sent == data.Length)
                {
                    return true;
                }

                data = data.Slice(sent);
            }

            SendQueue queue = _sendQueue ??= new SendQueue();
            if (queue.Length + data.Length > _settings.MaxBufferedBytes)
            {
                FinishClose(ConnectionCloseReason.OutputLimitExceeded, SocketError.Success, abortive: true);
                return false;
            }

            queue.Append(data);
            _interestDirty = true;
            if (!_writePaused && queue.Length >= _settings.HighWatermark)
            {
                _writePaused = true;
                _handler.OnWritePaused(this);
            }

            return true;
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Sends from the backlog until it is empty or the kernel's buffer is full; handles the low watermark and a pending FIN.</summary>
    private void Flush()
    {
        SendQueue queue = _sendQueue!;
        while (!queue.IsEmpty)
        {
            ArraySegment<byte> segment = queue.Peek();
            int n = _transfer.Send(segment, out SocketError error);
            if (error != SocketError.Success)
            {
                if (error == SocketError.WouldBlock)
                {
                    break;
                }

                CloseOnError(error);
                return;
            }

            queue.Consume(n);
            Volatile.Write(ref _bytesSent, _bytesSent + n);
            _lastActivity = Stopwatch.GetTimestamp();
            if (n < segment.Count)
            {
                break;
            }
        }

        _interestDirty = true;
        if (_writePaused && queue.Length <= _settings.LowWatermark)
        {
            _writePaused = false;
            _handler.OnWriteResumed(this);
            if (_closed)
            {
                return;
            }
        }

        if (queue.IsEmpty && _outputShutdownRequested && !_outputShut)
        {
            ShutdownOutputNow();
        }
    }

    /// <summary>
    /// Reads until the socket has nothing more, the end of stream, an error, a pause, or the per-event budget; hands each
    /// read to the handler (or discards it once a graceful close ended the input). Rents the buffer for this pass only.
    /// Once a hang-up was reported (<see cref="_hangupSeen"/>) a short read does not end the pass: it reads on to the end of
    /// stream. After a reported error (<see cref="_errorSeen"/>) an end of stream is a reset whose error code was consumed
    /// before the read (a kqueue emulation reads SO_ERROR to fill in its event).
    /// </summary>
    private void ReceivePass()
    {
        if (_inReceivePass)
        {
            return;
        }

        _inReceivePass = true;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(_settings.ReceiveBufferSize);
        try
        {
            for (int reads = 0; ; reads++)
            {
                if (_closed || _inputClosed)
                {
                    return;
                }

                bool discard = _inputEnded;
                if (!discard && _receivingPaused)
                {
                    return;
                }

                if (reads == _settings.MaxReadsPerEvent)
                {
                    if (_settings.TriggerMode == TriggerMode.Edge)
                    {
                        // No new edge will come for data already waiting: continue after the other work of this iteration.
                        PostReceiveContinuation();
                    }

                    return;
                }

                int n = _transfer.Receive(buffer, out SocketError error);
                if (error != SocketError.Success)
                {
                    if (error == SocketError.WouldBlock)
                    {
                        InputDrained();
                    }
                    else
                    {
                        CloseOnError(error);
                    }

                    return;
                }

                if (n == 0)
                {
                    if (_errorSeen)
                    {
                        SocketError reported = PendingError();
                        CloseOnError(reported != SocketError.Success ? reported : SocketError.ConnectionReset);
                    }
                    else
                    {
                        EndOfInput();
                    }

                    return;
                }

                Volatile.Write(ref _bytesReceived, _bytesReceived + n);
                _lastActivity = Stopwatch.GetTimestamp();
                if (!discard)
                {
                    _handler.OnReceived(this, new ReadOnlySpan<byte>(buffer, 0, n));
                }

                if (n < buffer.Length && !_hangupSeen)
                {
                    // A short read emptied the socket's buffer: anything arriving later is a new readiness (and a new edge).
                    InputDrained();
                    return;
                }
            }
        }
        finally
        {
            _inReceivePass = false;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The socket has nothing more to read for now. A graceful close stops delivering input here.</summary>
    private void InputDrained()
    {
        if (_closeRequested && !_inputEnded)
        {
            _inputEnded = true;
            ProceedClose();
        }
    }

    private void EndOfInput()
    {
        _inputClosed = true;
        _interestDirty = true;
        if (!_closeRequested)
        {
            _handler.OnReadClosed(this);
            if (_closed)
            {
                return;
            }
        }

        if (_closeRequested)
        {
            ProceedClose();
        }

        CheckCompleted();
    }

    private void PostReceiveContinuation()
    {
        if (_continuationPosted)
        {
            return;
        }

        _continuationPosted = Loop.TryPost(s_continueReceiving, this);
    }

    private void ContinueReceiving()
    {
        _continuationPosted = false;
        if (_closed)
        {
            return;
        }

        _depth++;
        try
        {
            if (WantsToRead)
            {
                ReceivePass();
            }
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }
}
