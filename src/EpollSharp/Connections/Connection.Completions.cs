using System;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using EpollSharp.Backends;
using EpollSharp.Native;

namespace EpollSharp.Connections;

// The completion path: on a loop whose backend does the I/O itself (io_uring, EventLoop.CompletionIo), the connection
// has no readiness registration. A multishot receive hands it data in the backend's provided buffers (given back when
// OnReceived returns), and the backlog goes out as one submitted send at a time, from the pinned head chunk. Both go to
// the kernel with the loop's next wait: no recv or send system call per message. The public behaviour is the readiness
// path's; where the kernel's completions could get ahead of the connection's state (a pause, a graceful close), the
// receive is cancelled, and what arrives meanwhile is held (copied) and delivered in order when reading goes on.
public sealed partial class Connection : ICompletionSink
{
    /// <summary>The loop's completion I/O when the connection uses it; null on the readiness path.</summary>
    private readonly ICompletionIo? _completionIo;

    /// <summary>The connection's channel on <see cref="_completionIo"/>, once started.</summary>
    private CompletionChannel? _channel;

    /// <summary>A cancel of the armed receive was asked for (its final completion not yet here).</summary>
    private bool _receiveCancelling;

    /// <summary>A send is deferred to the end of the iteration (<see cref="ICompletionIo.DeferSend"/>).</summary>
    private bool _sendDeferred;

    /// <summary>The most chunks (of <see cref="SendQueue.ChunkSize"/>) one send takes.</summary>
    private const int MaxSendChunks = 64;

    /// <summary>
    /// The pins of the chunks the send in flight reads from (the first <see cref="_sendPinCount"/>): made with the first
    /// send of a chunk (a send of only a borrowed front pins nothing), as long as <see cref="_sendMessageCapacity"/>.
    /// </summary>
    private GCHandle[]? _sendPins;

    private int _sendPinCount;

    /// <summary>
    /// The send's <c>msghdr</c> and its iovecs, in native memory (allocated with the first send, freed after the last
    /// completion), with room for <see cref="_sendMessageCapacity"/> buffers: one, or <see cref="MaxSendChunks"/> once a
    /// send took more.
    /// </summary>
    private IntPtr _sendMessage;

    /// <summary>How many buffers <see cref="_sendMessage"/> has room for (when it is allocated).</summary>
    private int _sendMessageCapacity;

    /// <summary>Bytes the kernel delivered while the connection could not hand them over (paused, or behind held bytes), in order.</summary>
    private SendQueue? _held;

    /// <summary>
    /// Held bytes still in the backend's provided buffers, in order (a buffer kept rather than copied; given back once
    /// delivered). Only while <see cref="_held"/> is empty: when buffers run short, these are copied there.
    /// </summary>
    private HeldPiece[]? _heldPieces;

    private int _heldPieceHead;

    private int _heldPieceCount;

    /// <summary>The end of stream came after <see cref="_held"/> bytes: delivered after them.</summary>
    private bool _heldEndOfStream;

    /// <summary>The loop iteration whose deliveries <see cref="_deliveredPieces"/> counts.</summary>
    private long _deliveryIteration;

    /// <summary>
    /// Pieces handed to the handler in <see cref="_deliveryIteration"/>: at most <see cref="ConnectionOptions.MaxReadsPerEvent"/>
    /// per iteration, as the readiness path reads per event (one busy connection cannot hold the loop, and what it writes
    /// back meets the kernel at the pace it does there); the rest is held for the next iteration.
    /// </summary>
    private int _deliveredPieces;

    /// <summary>
    /// The bytes the loop thread is handing to a connection's <see cref="ConnectionHandler.OnReceived"/> when they lie in a
    /// provided buffer: a write by that connection of bytes within them, to an empty backlog, borrows them instead of
    /// copying (<see cref="TryBorrowForSend"/>). One per thread (a loop thread hands over one piece at a time), so that no
    /// connection carries it.
    /// </summary>
    [ThreadStatic]
    private static DeliveryWindow? t_delivery;

    /// <summary>
    /// Writes by the connections of this connection's loop sent from the provided receive buffer they were handed in, with
    /// no copy (tests check the path is taken). Counted per loop, so that no connection carries the count.
    /// </summary>
    internal long LoopBorrowedWrites => _stats.BorrowedWrites;

    /// <summary>
    /// Sends on this connection's loop that took only part of a borrowed front, whose rest was then copied (tests check the
    /// path is taken). Counted per loop.
    /// </summary>
    internal long LoopPartialBorrowedSends => _stats.PartialBorrowedSends;

    /// <summary>Receive completions with data (tests check the completion path is in use).</summary>
    internal long CompletionReceives => _channel?.Receives ?? 0;

    /// <summary>Send completions (tests check the completion path is in use).</summary>
    internal long CompletionSends => _channel?.Sends ?? 0;

    /// <summary>How many of the connection's multishot receives ended (for tests).</summary>
    internal int CompletionReceiveEnds => _channel?.ReceiveEnds ?? 0;

    /// <summary>The result of the last completion that ended a multishot receive of the connection (for tests).</summary>
    internal int LastCompletionReceiveEnd => _channel?.LastReceiveEnd ?? 0;

    /// <summary>Whether the connection's receive is parked in the backend for want of buffers (for tests).</summary>
    internal bool ReceiveParked => _channel?.ReceiveParked ?? false;

    /// <summary>How many chunks the connection's send message has room for: 0 before its first send, then 1 or <see cref="MaxSendChunks"/> (for tests).</summary>
    internal int SendMessageCapacity => _sendMessage == IntPtr.Zero ? 0 : _sendMessageCapacity;

    /// <summary>How many chunk pins the connection keeps room for: 0 until it sends from a chunk (for tests).</summary>
    internal int SendPinCapacity => _sendPins?.Length ?? 0;

    /// <summary>Bytes the kernel delivered that the connection holds (paused, or behind earlier held bytes), in provided buffers or copied.</summary>
    internal long HeldBytes
    {
        get
        {
            long n = _held?.Length ?? 0;
            for (int i = 0; i < _heldPieceCount; i++)
            {
                n += _heldPieces![(_heldPieceHead + i) % _heldPieces.Length].Length;
            }

            return n;
        }
    }

    /// <summary>Whether the connection's multishot receive is in the kernel (armed, its final completion not yet dispatched).</summary>
    internal bool ReceiveArmed => _channel?.ReceiveArmed ?? false;

    /// <summary>Whether the connection uses the completion path.</summary>
    internal bool UsesCompletions => _completionIo is not null;

    private bool HasHeld => _heldEndOfStream || _heldPieceCount > 0 || _held is { IsEmpty: false };

    /// <inheritdoc/>
    bool ICompletionSink.OnReceiveCompleted(int result, bool more, ushort bufferId, int bufferOffset, ReadOnlySpan<byte> data)
    {
        if (!more)
        {
            _receiveCancelling = false;
        }

        if (Has(ConnectionFlags.Closed))
        {
            return false;
        }

        _keptBuffer = false;
        Guarded(static (c, r, d) => c.HandleReceiveCompletion(r.Result, r.More, r.BufferId, r.BufferOffset, d), (Result: result, More: more, BufferId: bufferId, BufferOffset: bufferOffset), data);
        return _keptBuffer;
    }

    /// <summary>Set while a receive completion is handled when its buffer is kept (held) rather than given back.</summary>
    private bool _keptBuffer;

    /// <inheritdoc/>
    void ICompletionSink.OnSendCompleted(int result)
    {
        UnpinSent();

        if (Has(ConnectionFlags.Closed))
        {
            // The close left the backlog and the message to this completion: the kernel no longer reads them.
            _sendQueue?.Clear(_completionIo);
            FreeSendMessage();
            return;
        }

        Guarded(static (c, r, _) => c.HandleSendCompletion(r), result);
    }

    /// <summary>The body of a receive completion: data delivered (or held), end of stream, an error, or the receive's end.</summary>
    private bool HandleReceiveCompletion(int result, bool more, ushort bufferId, int bufferOffset, ReadOnlySpan<byte> data)
    {
        if (!more)
        {
            // Armed again (or not) by the outermost Exit, from the state.
            MarkInterestDirty();
        }

        if (result > 0)
        {
            _lastActivity = ActivityTimestamp();
            if (Has(ConnectionFlags.InputEnded))
            {
                CountReceived(result);
                return true;
            }

            DeliverReceived(data, bufferId, bufferOffset);
            return true;
        }

        if (result == 0)
        {
            if (HasHeld)
            {
                _heldEndOfStream = true;
            }
            else
            {
                EndOfInput();
            }

            return true;
        }

        int errno = -result;
        if (errno is Interop.Errno.ECANCELED or Interop.Errno.ENOBUFS or Interop.Errno.EAGAIN or Interop.Errno.EINTR)
        {
            // Cancelled (a pause, a close, a thread that submitted it ended) or out of buffers: the state decides.
            if (!more && Has(ConnectionFlags.CloseRequested) && !Has(ConnectionFlags.InputEnded) && !Has(ConnectionFlags.ReceivingPaused) && !HasHeld)
            {
                DrainForClose();
            }

            return true;
        }

        CloseOnError(SocketErrors.FromLinuxErrno(errno));
        return true;
    }

    /// <summary>
    /// Hands <paramref name="data"/> (at <paramref name="bufferOffset"/> in provided buffer <paramref name="bufferId"/>) to
    /// the handler in pieces of at most the receive buffer size; holds what it cannot hand over now.
    /// </summary>
    private void DeliverReceived(ReadOnlySpan<byte> data, ushort bufferId, int bufferOffset)
    {
        int length = data.Length;
        if (HasHeld || Has(ConnectionFlags.ReceivingPaused | ConnectionFlags.InReceivePass))
        {
            Hold(data, bufferId, bufferOffset);
            return;
        }

        TryBeginReceivePass();
        try
        {
            int piece = _settings.ReceiveBufferSize;
            while (!data.IsEmpty)
            {
                if (Has(ConnectionFlags.Closed))
                {
                    return;
                }

                if (Has(ConnectionFlags.InputEnded))
                {
                    return;
                }

                if (Has(ConnectionFlags.ReceivingPaused) || !TakeDeliveryBudget())
                {
                    Hold(data, bufferId, bufferOffset + length - data.Length);
                    return;
                }

                int n = Math.Min(piece, data.Length);
                CountReceived(n);
                ReadOnlySpan<byte> bytes = data.Slice(0, n);
                SetDelivering(bytes, bufferId);
                _handler.OnReceived(this, bytes);
                EndDelivering();
                data = data.Slice(n);
            }
        }
        finally
        {
            EndDelivering();
            EndReceivePass();
        }
    }

    /// <summary>Notes the bytes of provided buffer <paramref name="bufferId"/> about to be handed to the handler.</summary>
    private unsafe void SetDelivering(ReadOnlySpan<byte> bytes, ushort bufferId)
    {
        DeliveryWindow window = t_delivery ??= new DeliveryWindow();
        fixed (byte* p = bytes)
        {
            // Native memory (the provided buffers' mapping): the address stays valid after the fixed block.
            window.Base = p;
        }

        window.Length = bytes.Length;
        window.Buffer = bufferId;
        window.Owner = this;
    }

    /// <summary>The handler returned (or threw): no write borrows from the piece any more.</summary>
    private static void EndDelivering()
    {
        if (t_delivery is { } window)
        {
            window.Owner = null;
            window.Length = 0;
        }
    }

    /// <summary>The window of <see cref="t_delivery"/>: the piece being handed over, and to which connection.</summary>
    private sealed unsafe class DeliveryWindow
    {
        public Connection? Owner;
        public byte* Base;
        public int Length;
        public ushort Buffer;
    }

    /// <summary>
    /// A write to an empty backlog of bytes that lie within those being handed over from a provided buffer (an echo): the
    /// backlog borrows them, the buffer kept until they are sent, instead of copying them into a chunk. Not once a quarter
    /// of the buffers are kept (<see cref="ICompletionIo.ReceiveBuffersScarce"/>), nor past the output limit (the caller's
    /// path closes the connection).
    /// </summary>
    private unsafe bool TryBorrowForSend(ReadOnlySpan<byte> data)
    {
        DeliveryWindow? window = t_delivery;
        if (window is null || window.Owner != this || _sendQueue is { IsEmpty: false } || data.Length > _settings.MaxBufferedBytes || _completionIo!.ReceiveBuffersScarce)
        {
            return false;
        }

        fixed (byte* p = data)
        {
            if (p < window.Base || p + data.Length > window.Base + window.Length)
            {
                return false;
            }

            _completionIo.KeepReceiveBuffer(window.Buffer);
            (_sendQueue ??= new SendQueue()).Borrow(p, data.Length, window.Buffer);
        }

        _stats.OnBorrowedWrite();
        MarkInterestDirty();
        return true;
    }

    /// <summary>
    /// Counts bytes received when they are handed over (or discarded), not when the kernel delivered them: held bytes are
    /// the readiness path's bytes still in the socket.
    /// </summary>
    private void CountReceived(int n)
    {
        Volatile.Write(ref _bytesReceived, _bytesReceived + n);
        _stats.AddReceived(n);
    }

    /// <summary>Counts one piece against this iteration's <see cref="ConnectionOptions.MaxReadsPerEvent"/>; false when the budget is spent.</summary>
    private bool TakeDeliveryBudget()
    {
        long iteration = Loop.MetricIterations;
        if (iteration != _deliveryIteration)
        {
            _deliveryIteration = iteration;
            _deliveredPieces = 0;
        }

        if (_deliveredPieces >= _settings.MaxReadsPerEvent)
        {
            return false;
        }

        _deliveredPieces++;
        return true;
    }

    /// <summary>
    /// Holds bytes that arrived while they could not be delivered (at <paramref name="offset"/> in provided buffer
    /// <paramref name="bufferId"/>); they go out first when reading goes on. The buffer is kept, not copied, unless the
    /// backend runs short of buffers (then everything held is copied, and the buffers given back).
    /// </summary>
    private void Hold(ReadOnlySpan<byte> data, ushort bufferId, int offset)
    {
        MarkInterestDirty();
        if (_held is { IsEmpty: false } || _completionIo!.ReceiveBuffersScarce)
        {
            CopyHeldPieces();
            (_held ??= new SendQueue()).Append(data);
            return;
        }

        if (_heldPieces is null || _heldPieceCount == _heldPieces.Length)
        {
            var grown = new HeldPiece[_heldPieces is null ? 8 : _heldPieces.Length * 2];
            for (int i = 0; i < _heldPieceCount; i++)
            {
                grown[i] = _heldPieces![(_heldPieceHead + i) % _heldPieces.Length];
            }

            _heldPieces = grown;
            _heldPieceHead = 0;
        }

        _heldPieces[(_heldPieceHead + _heldPieceCount) % _heldPieces.Length] = new HeldPiece(bufferId, offset, data.Length);
        _heldPieceCount++;
        _keptBuffer = true;
    }

    /// <summary>Copies the held pieces into <see cref="_held"/>, in order, and gives their buffers back.</summary>
    private void CopyHeldPieces()
    {
        while (_heldPieceCount > 0)
        {
            ref HeldPiece piece = ref _heldPieces![_heldPieceHead];
            (_held ??= new SendQueue()).Append(_completionIo!.ReceiveBuffer(piece.BufferId).Slice(piece.Start, piece.Length));
            ReleaseHeldPiece();
        }
    }

    /// <summary>Gives the first held piece's buffer back and drops it.</summary>
    private void ReleaseHeldPiece()
    {
        ref HeldPiece piece = ref _heldPieces![_heldPieceHead];
        _completionIo!.ReleaseReceiveBuffer(piece.BufferId);
        piece = default;
        _heldPieceHead = (_heldPieceHead + 1) % _heldPieces.Length;
        _heldPieceCount--;
    }

    /// <summary>Gives back every held buffer (the connection closed).</summary>
    private void ReleaseHeldPieces()
    {
        while (_heldPieceCount > 0)
        {
            ReleaseHeldPiece();
        }
    }

    /// <summary>Delivers the held bytes (and a held end of stream) while reading goes on; from the posted continuation.</summary>
    private void DeliverHeld()
    {
        if (!TryBeginReceivePass())
        {
            return;
        }

        try
        {
            while (_heldPieceCount > 0)
            {
                if (Has(ConnectionFlags.Closed))
                {
                    ReleaseHeldPieces();
                    return;
                }

                bool discardPiece = Has(ConnectionFlags.InputEnded);
                if (!discardPiece && Has(ConnectionFlags.ReceivingPaused))
                {
                    return;
                }

                if (!discardPiece && !TakeDeliveryBudget())
                {
                    MarkInterestDirty();
                    return;
                }

                ref HeldPiece piece = ref _heldPieces![_heldPieceHead];
                int n = Math.Min(piece.Length, _settings.ReceiveBufferSize);
                ReadOnlySpan<byte> bytes = _completionIo!.ReceiveBuffer(piece.BufferId).Slice(piece.Start, n);
                ushort bufferId = piece.BufferId;
                piece.Start += n;
                piece.Length -= n;
                CountReceived(n);
                if (!discardPiece)
                {
                    SetDelivering(bytes, bufferId);
                    _handler.OnReceived(this, bytes);
                    EndDelivering();
                    if (Has(ConnectionFlags.Closed))
                    {
                        ReleaseHeldPieces();
                        return;
                    }
                }

                if (_heldPieces[_heldPieceHead].Length == 0)
                {
                    ReleaseHeldPiece();
                }
            }

            SendQueue? held = _held;
            while (held is { IsEmpty: false })
            {
                if (Has(ConnectionFlags.Closed))
                {
                    held.Clear();
                    return;
                }

                bool discard = Has(ConnectionFlags.InputEnded);
                if (!discard && Has(ConnectionFlags.ReceivingPaused))
                {
                    return;
                }

                if (!discard && !TakeDeliveryBudget())
                {
                    // The rest in a later iteration (the outermost Exit posts the continuation again).
                    MarkInterestDirty();
                    return;
                }

                ArraySegment<byte> segment = held.Peek();
                int n = Math.Min(segment.Count, _settings.ReceiveBufferSize);
                CountReceived(n);
                if (!discard)
                {
                    _handler.OnReceived(this, new ReadOnlySpan<byte>(segment.Array!, segment.Offset, n));
                    if (Has(ConnectionFlags.Closed))
                    {
                        held.Clear();
                        return;
                    }
                }

                // Held bytes are copies, never borrowed: no backend to name.
                held.Consume(n, null);
            }
        }
        finally
        {
            EndDelivering();
            EndReceivePass();
        }

        if (_heldEndOfStream)
        {
            _heldEndOfStream = false;
            EndOfInput();
        }

        MarkInterestDirty();
    }

    /// <summary>The completion path's posted continuation: held bytes first, then the read-through of a graceful close.</summary>
    private void CompletionReceiveStep()
    {
        if (HasHeld)
        {
            DeliverHeld();
            if (Has(ConnectionFlags.Closed) || HasHeld)
            {
                return;
            }
        }

        if (Has(ConnectionFlags.CloseRequested) && !Has(ConnectionFlags.InputEnded | ConnectionFlags.ReadClosed | ConnectionFlags.ReceivingPaused) && (_channel is null || !_completionIo!.ReceivePending(_channel)))
        {
            DrainForClose();
        }

        MarkInterestDirty();
    }

    /// <summary>
    /// A graceful close delivers what has arrived: with every receive completion handed over, reads the socket to its end
    /// with <c>recv</c>, as the readiness path does; the input then ends, and the multishot receive reads on (and
    /// discards) to the peer's end of stream. Bytes the multishot receive takes meanwhile arrived after the close.
    /// </summary>
    private void DrainForClose()
    {
        ReceivePass();
        if (!Has(ConnectionFlags.Closed) && Has(ConnectionFlags.CloseRequested) && !Has(ConnectionFlags.InputEnded | ConnectionFlags.ReadClosed | ConnectionFlags.ReceivingPaused))
        {
            // The pass stopped at its read budget: go on after the loop's other work.
            PostReceiveContinuation();
        }

        MarkInterestDirty();
    }

    /// <summary>The body of a send completion: the bytes leave the backlog; the next send, the low watermark, a pending FIN.</summary>
    private bool HandleSendCompletion(int result)
    {
        SendQueue queue = _sendQueue!;
        if (result < 0)
        {
            int errno = -result;
            if (errno is Interop.Errno.ECANCELED or Interop.Errno.EAGAIN or Interop.Errno.EINTR)
            {
                // Sent again by the outermost Exit.
                MarkInterestDirty();
                return true;
            }

            CloseOnError(SocketErrors.FromLinuxErrno(errno));
            return true;
        }

        if (result > 0)
        {
            queue.ConsumeAcross(result, _completionIo);
            Volatile.Write(ref _bytesSent, _bytesSent + result);
            _stats.AddSent(result);
            _lastActivity = ActivityTimestamp();
        }

        if (queue.HasBorrowed)
        {
            // The send took part of the bytes borrowed from a provided buffer: the rest waits for room in the socket, in
            // chunks, so that a slow peer cannot keep the buffer (and the other bytes in it) out of the kernel's reach.
            queue.CopyBorrowed(_completionIo!);
            _stats.OnPartialBorrowedSend();
        }

        MarkInterestDirty();
        if (queue.Length <= _settings.LowWatermark && TryResumeWrites())
        {
            _handler.OnWriteResumed(this);
            if (Has(ConnectionFlags.Closed))
            {
                return true;
            }
        }

        if (queue.IsEmpty && Has(ConnectionFlags.OutputShutdownRequested) && !Has(ConnectionFlags.OutputShut))
        {
            ShutdownOutputNow();
        }

        return true;
    }

    /// <summary>The completion path's <see cref="WriteCore"/>: the bytes join the backlog, which the outermost Exit submits.</summary>
    private bool WriteQueued(ReadOnlySpan<byte> data)
    {
        SendQueue? queue = TryBorrowForSend(data) ? _sendQueue : AppendToBacklog(data);
        if (queue is null)
        {
            return false;
        }

        // The backlog counts the bytes of a send in flight (the kernel has not taken them until it completes). Writes
        // wait for the iteration's one send. The high watermark applies as on the readiness path, to bytes the kernel did
        // not take: reaching it with no send in flight, the bytes are offered to the kernel now (one send call, as the
        // readiness path makes for every write); with a send still in flight, the socket pushed back (sends are submitted
        // at the end of an iteration and their completions dispatched before the receives', so it reached the kernel).
        if (!_channel!.SendInFlight && queue.Length >= _settings.HighWatermark && !Has(ConnectionFlags.WritePaused))
        {
            Flush();
            if (Has(ConnectionFlags.Closed))
            {
                return false;
            }
        }

        PauseWritesAtHighWatermark(queue);
        return true;
    }

    /// <summary>
    /// The completion path's <see cref="ApplyInterest"/>: arms the receive when reading goes on (and nothing is held, and
    /// no close is reading the socket through), cancels it when not, and submits the backlog's head when no send is in flight.
    /// </summary>
    private unsafe void ApplyCompletions()
    {
        CompletionChannel? channel = _channel;
        if (channel is null || Has(ConnectionFlags.Closed))
        {
            return;
        }

        bool closeDrain = Has(ConnectionFlags.CloseRequested) && !Has(ConnectionFlags.InputEnded);
        bool read = WantsToRead && !closeDrain && !HasHeld;
        if (read && !channel.ReceiveArmed)
        {
            _completionIo!.StartReceive(channel);
            _receiveCancelling = false;
        }
        else if (!read && channel.ReceiveArmed && !_receiveCancelling)
        {
            _completionIo!.CancelReceive(channel);
            _receiveCancelling = true;
        }

        if (HasHeld && (Has(ConnectionFlags.InputEnded) || !Has(ConnectionFlags.ReceivingPaused)))
        {
            PostReceiveContinuation();
        }
        else if (closeDrain && WantsToRead && !channel.ReceiveArmed && !Has(ConnectionFlags.InReceivePass))
        {
            PostReceiveContinuation();
        }

        if (_sendQueue is { IsEmpty: false } && !channel.SendInFlight && !_sendDeferred)
        {
            _sendDeferred = true;
            _completionIo!.DeferSend(channel);
        }
    }

    /// <inheritdoc/>
    void ICompletionSink.OnSendReady()
    {
        _sendDeferred = false;
        if (!Has(ConnectionFlags.Closed) && _sendQueue is { IsEmpty: false } queue && _channel is { SendInFlight: false } channel)
        {
            SubmitSend(channel, queue);
        }
    }

    /// <summary>
    /// Submits one send of the whole backlog (a borrowed front, then up to <see cref="MaxSendChunks"/> buffers in all), its
    /// chunks pinned until the completion (a borrowed front is native memory, its buffer kept by the backlog).
    /// </summary>
    private unsafe void SubmitSend(CompletionChannel channel, SendQueue queue)
    {
        int borrowed = queue.HasBorrowed ? 1 : 0;
        int chunks = Math.Min(queue.ChunkCount, MaxSendChunks - borrowed);
        int buffers = borrowed + chunks;
        if (_sendMessage == IntPtr.Zero || buffers > _sendMessageCapacity)
        {
            // Room for one buffer until a send takes more (a small message's backlog is one chunk or a borrowed front),
            // then for the most. The connection keeps it while it lives, so that sends allocate nothing; one that only ever
            // sent small messages keeps 72 bytes of native memory (and a one-entry pin array if it sent from a chunk)
            // instead of 1 KiB and 64 entries.
            int capacity = buffers == 1 ? 1 : MaxSendChunks;
            FreeSendMessage();
            _sendMessage = Marshal.AllocHGlobal(sizeof(Interop.MsgHdr) + (capacity * sizeof(Interop.IoVec)));
            _sendMessageCapacity = capacity;
        }

        if (chunks > 0 && (_sendPins is null || _sendPins.Length < _sendMessageCapacity))
        {
            // No send is in flight, so no pin is held.
            _sendPins = new GCHandle[_sendMessageCapacity];
        }

        var message = (Interop.MsgHdr*)_sendMessage;
        var iov = (Interop.IoVec*)((byte*)_sendMessage + sizeof(Interop.MsgHdr));
        if (borrowed != 0)
        {
            iov[0].Base = queue.BorrowedAddress;
            iov[0].Len = (nuint)queue.BorrowedLength;
        }

        for (int i = 0; i < chunks; i++)
        {
            ArraySegment<byte> chunk = queue.ChunkAt(i);
            _sendPins![i] = GCHandle.Alloc(chunk.Array, GCHandleType.Pinned);
            iov[borrowed + i].Base = _sendPins[i].AddrOfPinnedObject() + chunk.Offset;
            iov[borrowed + i].Len = (nuint)chunk.Count;
        }

        _sendPinCount = chunks;
        *message = default;
        message->Iov = (nint)iov;
        message->IovLen = (nuint)buffers;
        _completionIo!.Send(channel, message);
    }

    /// <summary>Lets the chunks of the completed send move again.</summary>
    private void UnpinSent()
    {
        for (int i = 0; i < _sendPinCount; i++)
        {
            _sendPins![i].Free();
        }

        _sendPinCount = 0;
    }

    /// <summary>Frees the send's native message (after the last send completed, or when none is in flight at the close).</summary>
    private void FreeSendMessage()
    {
        if (_sendMessage != IntPtr.Zero)
        {
            Marshal.FreeHGlobal(_sendMessage);
            _sendMessage = IntPtr.Zero;
        }
    }

    /// <summary>The completion path's part of <see cref="FinishClose"/>: cancels what is in flight before the socket is closed.</summary>
    /// <returns>Whether the backlog may be cleared now (no send reads from it any more).</returns>
    private bool CloseCompletions()
    {
        CompletionChannel? channel = _channel;
        if (channel is null)
        {
            return true;
        }

        try
        {
            _completionIo!.Close(channel);
        }
        catch (ObjectDisposedException)
        {
            // The ring is gone, and what was in flight with it.
        }

        if (!Has(ConnectionFlags.InReceivePass))
        {
            _held?.Clear();
            ReleaseHeldPieces();
        }

        if (channel.SendInFlight)
        {
            return false;
        }

        FreeSendMessage();
        return true;
    }

    /// <summary>Held bytes in a provided buffer: the buffer's id, and where the bytes not yet delivered are in it.</summary>
    private struct HeldPiece
    {
        public ushort BufferId;
        public int Start;
        public int Length;

        public HeldPiece(ushort bufferId, int start, int length)
        {
            BufferId = bufferId;
            Start = start;
            Length = length;
        }
    }
}
