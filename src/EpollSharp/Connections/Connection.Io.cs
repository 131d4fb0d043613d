using System;
using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    private static readonly Action<object?> s_continueReceiving = static state => ((Connection)state!).ContinueReceiving();

    /// <summary>The registration's readiness callback (<see cref="s_onReady"/>), with the socket error the backend reported with the event, if any.</summary>
    private void OnReady(Readiness readiness, SocketError reportedError) =>
        Guarded(static (c, e, _) => c.HandleReadiness(e.Readiness, e.ReportedError), (Readiness: readiness, ReportedError: reportedError));

    /// <summary>The body of <see cref="OnReady"/>: flushes the backlog, notes a hang-up or an error, reads.</summary>
    private bool HandleReadiness(Readiness readiness, SocketError reportedError)
    {
        const Readiness Trouble = Readiness.Closed | Readiness.Error;
        if (reportedError != SocketError.Success && _reportedError == SocketError.Success)
        {
            _reportedError = reportedError;
        }

        if (Has(ConnectionFlags.Closed))
        {
            return true;
        }

        if ((readiness & (Readiness.Writable | Trouble)) != 0 && _sendQueue is { IsEmpty: false })
        {
            Flush();
            if (Has(ConnectionFlags.Closed))
            {
                return true;
            }
        }

        // Remembered, not just passed to this pass: a pass cut short (MaxReadsPerEvent, a pause) and the ones after it
        // must still read to the end of stream, and edge-triggered no new event will come for it.
        NoteReadiness(readiness);
        if ((readiness & (Readiness.Readable | Readiness.ReadClosed | Trouble)) != 0 && WantsToRead)
        {
            ReceivePass();
        }
        else if ((readiness & Readiness.Error) != 0)
        {
            SocketError error = PendingError();
            if (error != SocketError.Success)
            {
                CloseOnError(error);
            }
        }

        return true;
    }

    /// <summary>
    /// The socket's error: the one the backend reported with an event when it did (over libkqueue the socket no longer
    /// has it), else the pending error read from the socket (which clears it).
    /// </summary>
    private SocketError PendingError()
    {
        if (_reportedError != SocketError.Success)
        {
            return _reportedError;
        }

        try
        {
            object? value = _socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error);
            return value is int code ? (SocketError)code : SocketError.Success;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode;
        }
        catch (ObjectDisposedException)
        {
            return SocketError.OperationAborted;
        }
    }

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
        if (Has(ConnectionFlags.Closed | ConnectionFlags.OutputShutdownRequested))
        {
            return false;
        }

        if (data.IsEmpty)
        {
            return true;
        }

        return Guarded(static (c, _, d) => c.WriteCore(d), 0, data);
    }

    /// <summary>The body of <see cref="Write(ReadOnlySpan{byte})"/>: sends at once what the kernel takes, buffers the rest.</summary>
    private bool WriteCore(ReadOnlySpan<byte> data)
    {
        if (_completionIo is not null)
        {
            return WriteQueued(data);
        }

        if (_sendQueue is null || _sendQueue.IsEmpty)
        {
            int sent = _transfer.Send(data, out SocketError error);
            if (sent > 0)
            {
                Volatile.Write(ref _bytesSent, _bytesSent + sent);
                _stats.AddSent(sent);
                _lastActivity = ActivityTimestamp();
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

        SendQueue? queue = AppendToBacklog(data);
        if (queue is null)
        {
            return false;
        }

        PauseWritesAtHighWatermark(queue);
        return true;
    }

    /// <summary>
    /// Appends <paramref name="data"/> to the backlog (both paths); when that would exceed <c>MaxBufferedBytes</c>, closes
    /// the connection abortively (<see cref="ConnectionCloseReason.OutputLimitExceeded"/>) and returns null.
    /// </summary>
    private SendQueue? AppendToBacklog(ReadOnlySpan<byte> data)
    {
        SendQueue queue = _sendQueue ??= new SendQueue();
        if (queue.Length + data.Length > _settings.MaxBufferedBytes)
        {
            FinishClose(ConnectionCloseReason.OutputLimitExceeded, SocketError.Success, abortive: true);
            return null;
        }

        queue.Append(data);
        MarkInterestDirty();
        return queue;
    }

    /// <summary>Pauses writes (and tells the handler) when the backlog reached the high watermark and they are not paused yet.</summary>
    private void PauseWritesAtHighWatermark(SendQueue queue)
    {
        if (queue.Length >= _settings.HighWatermark && TryPauseWrites())
        {
            _stats.OnWritePaused();
            _handler.OnWritePaused(this);
        }
    }

    /// <summary>Sends from the backlog until it is empty or the kernel's buffer is full; handles the low watermark and a pending FIN.</summary>
    private void Flush()
    {
        SendQueue queue = _sendQueue!;
        while (!queue.IsEmpty)
        {
            // A span: on the completion path the front may be borrowed bytes of a provided receive buffer.
            ReadOnlySpan<byte> segment = queue.PeekSpan();
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

            queue.Consume(n, _completionIo);
            Volatile.Write(ref _bytesSent, _bytesSent + n);
            _stats.AddSent(n);
            _lastActivity = ActivityTimestamp();
            if (n < segment.Length)
            {
                break;
            }
        }

        MarkInterestDirty();
        if (queue.Length <= _settings.LowWatermark && TryResumeWrites())
        {
            _handler.OnWriteResumed(this);
            if (Has(ConnectionFlags.Closed))
            {
                return;
            }
        }

        if (queue.IsEmpty && Has(ConnectionFlags.OutputShutdownRequested) && !Has(ConnectionFlags.OutputShut))
        {
            ShutdownOutputNow();
        }
    }

    /// <summary>
    /// Reads until the socket has nothing more, the end of stream, an error, a pause, or the per-event budget; hands each
    /// read to the handler (or discards it once a graceful close ended the input). Rents the buffer for this pass only.
    /// Once a hang-up was reported (<see cref="ConnectionFlags.HangupSeen"/>) a short read does not end the pass: it reads on to the end of
    /// stream. After a reported error (<see cref="ConnectionFlags.ErrorSeen"/>) an end of stream is a reset whose error code was consumed
    /// before the read (a kqueue emulation reads SO_ERROR to fill in its event).
    /// </summary>
    private void ReceivePass()
    {
        if (!TryBeginReceivePass())
        {
            return;
        }

        // Rented at the first read that needs it: a handler that lends its own memory (GetReceiveBuffer) may need none.
        byte[]? buffer = null;
        try
        {
            for (int reads = 0; ; reads++)
            {
                if (Has(ConnectionFlags.Closed | ConnectionFlags.ReadClosed))
                {
                    return;
                }

                bool discard = Has(ConnectionFlags.InputEnded);
                if (!discard && Has(ConnectionFlags.ReceivingPaused))
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

                // The handler's own memory when it lends some (the pipes' input on the loop: the bytes land where the
                // application reads them, without a copy), else the pass's buffer.
                ArraySegment<byte> target = discard ? default : _handler.GetReceiveBuffer(this, _settings.ReceiveBufferSize);
                if (target.Array is null)
                {
                    buffer ??= ArrayPool<byte>.Shared.Rent(_settings.ReceiveBufferSize);
                    target = new ArraySegment<byte>(buffer);
                }

                int n = _transfer.Receive(target, out SocketError error);
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
                    if (Has(ConnectionFlags.ErrorSeen))
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
                _stats.AddReceived(n);
                _lastActivity = ActivityTimestamp();
                if (!discard)
                {
                    _handler.OnReceived(this, new ReadOnlySpan<byte>(target.Array, target.Offset, n));
                }

                if (n < target.Count && !Has(ConnectionFlags.HangupSeen))
                {
                    // A short read emptied the socket's buffer: anything arriving later is a new readiness (and a new edge).
                    InputDrained();
                    return;
                }
            }
        }
        finally
        {
            EndReceivePass();
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>The socket has nothing more to read for now. A graceful close stops delivering input here.</summary>
    private void InputDrained()
    {
        if (TryEndInputDelivery())
        {
            ProceedClose();
        }
    }

    /// <summary>The end of stream was read: the handler hears of it (unless a close is under way), and the close or the half-close moves on.</summary>
    private void EndOfInput()
    {
        MarkReadClosed();
        if (!Has(ConnectionFlags.CloseRequested))
        {
            _handler.OnReadClosed(this);
            if (Has(ConnectionFlags.Closed))
            {
                return;
            }
        }

        if (Has(ConnectionFlags.CloseRequested))
        {
            ProceedClose();
        }

        CheckCompleted();
    }

    /// <summary>Posts <see cref="ContinueReceiving"/> to the loop, once: edge-triggered, data already waiting raises no new edge.</summary>
    private void PostReceiveContinuation()
    {
        if (Has(ConnectionFlags.ContinuationPosted))
        {
            return;
        }

        SetContinuationPosted(Loop.TryPost(s_continueReceiving, this));
    }

    /// <summary>The posted receive continuation (<see cref="s_continueReceiving"/>): another read pass.</summary>
    private void ContinueReceiving()
    {
        SetContinuationPosted(false);
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        if (_completionIo is not null)
        {
            Guarded(
                static (c, _, _) =>
                {
                    c.CompletionReceiveStep();
                    return true;
                },
                0);
            return;
        }

        Guarded(
            static (c, _, _) =>
            {
                if (c.WantsToRead)
                {
                    c.ReceivePass();
                }

                return true;
            },
            0);
    }

    /// <summary>Registers the interest the state wants now: readable while reading goes on, writable while a backlog waits.</summary>
    private void ApplyInterest()
    {
        if (_completionIo is not null)
        {
            ApplyCompletions();
            return;
        }

        if (Has(ConnectionFlags.Closed) || _registration is null)
        {
            return;
        }

        Interest want = Interest.None;
        if (WantsToRead)
        {
            want |= Interest.Readable;
        }

        if (_sendQueue is { IsEmpty: false })
        {
            want |= Interest.Writable;
        }

        if (want != _interest)
        {
            _registration.ChangeInterest(want);
            _interest = want;
        }
    }
}
