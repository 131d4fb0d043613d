using System;
using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;

namespace EpollSharp.Connections;

// With continuations on the loop, the application's input is not a System.IO.Pipelines Pipe but this reader, made for
// the case: OnReceived copies the received bytes into the reader's segments (blocks of the pipes' pool) and, when a read
// waits, completes it at once, so that the application's continuation runs inside OnReceived, as a callback handler's
// would — no pipe writer, no flush, no scheduler between. Any other completion of a waiting read (the peer's end of
// stream, a close, CancelPendingRead, the read's token) is posted to the loop, where the continuation then runs, as the
// pipe's loop scheduler did. The application may read from any thread (one reader at a time, as with any pipe): the
// state the loop and the reader share is guarded by a lock, taken once per message on the loop's side. With the pipes'
// own pool, the loop receives straight into a large block the reader lends (GetReceiveBuffer, one per loop thread), and a
// read of more than a small block's worth is linked into the reader as it is, without the copy.
public sealed partial class PipeConnection
{
    /// <summary>The application's input with continuations on the loop (else null: the <see cref="_input"/> pipe).</summary>
    private readonly LoopInputReader? _loopInput;

    /// <summary>The application's input reader, whichever kind.</summary>
    private PipeReader InputReader => _loopInput ?? _input!.Reader;

    /// <summary>The application completed the input (loop thread): receiving stops, as when the input pipe's flush said so.</summary>
    private void InputReaderCompletedOnLoop()
    {
        if (_inputDone || _isClosed)
        {
            _inputDone = true;
            return;
        }

        StopInput();
    }

    /// <summary>
    /// A <see cref="PipeReader"/> fed by <see cref="OnReceived"/> directly (see above). Backpressure as the pipe's: when
    /// the bytes received but not yet examined (<see cref="AdvanceTo(SequencePosition, SequencePosition)"/>; a pipe counts
    /// them so too, so that a reader waiting for more of a message it examined never stalls the input) reach
    /// <see cref="PipeConnectionOptions.InputPauseThreshold"/>, receiving pauses; it resumes (a step posted to the loop)
    /// once they are below <see cref="PipeConnectionOptions.InputResumeThreshold"/>. Segments are the pool's blocks,
    /// returned as soon as consumed: a connection whose bytes were all consumed holds none.
    /// </summary>
    private sealed class LoopInputReader : PipeReader, IValueTaskSource<ReadResult>
    {
        private const int Idle = 0;
        private const int Waiting = 1;
        private const int Held = 2;

        private static readonly Action<object?> s_deliverOnLoop = static state => ((LoopInputReader)state!).Deliver();
        private static readonly WaitCallback s_deliverOnPool = static state => ((LoopInputReader)state!).Deliver();
        private static readonly Action<object?> s_resumeOnLoop = static state => ((LoopInputReader)state!).ResumeOnLoop();
        private static readonly Action<object?> s_readerCompletedOnLoop = static state => ((LoopInputReader)state!)._owner.InputReaderCompletedOnLoop();
        private static readonly Action<object?> s_tokenCanceled = static state => ((LoopInputReader)state!).TokenCanceled();

        /// <summary>Free segment objects of this thread (their blocks went back to the pool).</summary>
        [ThreadStatic]
        private static Segment? t_freeSegments;

        [ThreadStatic]
        private static int t_freeSegmentCount;

        /// <summary>
        /// This loop thread's receive segment: a large block of the pipes' pool that the next receive lands in (lent by
        /// <see cref="GetReceiveBuffer"/>). A read of more than <see cref="PipeBlockPool.BlockSize"/> bytes is linked into
        /// the reader as it is (its block is the one a copy would have rented) and the thread takes a new one next time; a
        /// smaller read is copied into a small block as before, so a connection holding a few bytes holds a small block.
        /// </summary>
        [ThreadStatic]
        private static Segment? t_receiveSegment;

        /// <summary>Whether the reader lends receive memory: its pool is the pipes' own (a custom pool's blocks are its own business).</summary>
        private readonly bool _lendsReceiveMemory;

        private readonly PipeConnection _owner;
        private readonly MemoryPool<byte> _pool;
        private readonly int _maxBlock;
        private readonly long _pauseThreshold;
        private readonly long _resumeThreshold;
        private readonly object _sync = new();

        // ---- under _sync ----

        /// <summary>The received bytes not yet consumed: from <see cref="_headIndex"/> in <see cref="_head"/> to <see cref="Segment.End"/> of <see cref="_tail"/>.</summary>
        private Segment? _head;
        private int _headIndex;
        private Segment? _tail;

        /// <summary>Bytes received (also the running index where the next byte goes).</summary>
        private long _written;

        /// <summary>Bytes consumed (the running index of the first unconsumed byte).</summary>
        private long _consumed;

        /// <summary>How far the reader examined last: the bytes after it count against the pause threshold.</summary>
        private long _examined;

        /// <summary>Bytes arrived since the reader last examined everything: a read returns at once.</summary>
        private bool _dataReady;

        private bool _cancelNext;
        private bool _writerCompleted;
        private Exception? _writerError;
        private bool _readerCompleted;

        /// <summary><see cref="Idle"/>, <see cref="Waiting"/> (a ReadAsync waits), or <see cref="Held"/> (a result awaits its AdvanceTo).</summary>
        private int _state;

        /// <summary>A step delivering the waiting read was posted (to the loop, or the pool once the loop is gone).</summary>
        private bool _deliveryPosted;

        /// <summary>Receiving was paused at the pause threshold (and the resume not yet posted).</summary>
        private bool _paused;

        private CancellationToken _readToken;
        private bool _tokenFired;
        private CancellationTokenRegistration _registration;

        /// <summary>The waiting read (one at a time).</summary>
        private ManualResetValueTaskSourceCore<ReadResult> _read;

        public LoopInputReader(PipeConnection owner, PipeConnectionOptions options)
        {
            _owner = owner;
            _pool = options.MemoryPool ?? PipeBlockPool.Instance;
            int max = _pool.MaxBufferSize;
            _maxBlock = max <= 0 ? int.MaxValue : max;
            _pauseThreshold = options.InputPauseThreshold;
            _resumeThreshold = options.InputPauseThreshold == 0 ? 0 : options.InputResumeThreshold;
            _lendsReceiveMemory = ReferenceEquals(_pool, PipeBlockPool.Instance);
        }

        private Connection Connection => _owner.Connection;

        /// <summary>
        /// Memory for the connection's next receive of up to <paramref name="size"/> bytes (loop thread): the start of this
        /// thread's receive segment, or default (the connection's own buffer) with another pool or a larger size.
        /// </summary>
        public ArraySegment<byte> GetReceiveBuffer(int size)
        {
            if (!_lendsReceiveMemory || size > PipeBlockPool.LargeBlockSize)
            {
                return default;
            }

            Segment segment = t_receiveSegment ??= NewReceiveSegment();
            return new ArraySegment<byte>(segment.Array!, 0, size);
        }

        private static Segment NewReceiveSegment()
        {
            Segment segment = TakeFreeSegment();
            segment.Init(null, PipeBlockPool.Instance.Rent(PipeBlockPool.LargeBlockSize), 0);
            return segment;
        }

        // ================= the loop's side =================

        /// <summary>Bytes arrived (loop thread): appended; a waiting read completes at once, its continuation inline; at the pause threshold receiving pauses.</summary>
        public void OnReceived(ReadOnlySpan<byte> data)
        {
            ReadResult result = default;
            CancellationTokenRegistration registration = default;
            bool deliver = false;

            // Received into this thread's receive segment (GetReceiveBuffer), and more than a small block's worth: linked as is.
            Segment? lent = t_receiveSegment;
            if (lent is null || data.Length <= PipeBlockPool.BlockSize || !data.Overlaps(lent.Array, out int offset) || offset != 0)
            {
                lent = null;
            }

            lock (_sync)
            {
                if (_readerCompleted || _writerCompleted)
                {
                    // The application completed the input, or the connection is closing: what still arrives is discarded.
                    return;
                }

                if (lent is not null && (_tail is null || _tail.End == _tail.Memory.Length))
                {
                    Link(lent, data.Length);
                    t_receiveSegment = null;
                }
                else
                {
                    Append(data);
                }
                if (_state == Waiting && !_deliveryPosted)
                {
                    // (A read whose token fired, or that CancelPendingRead ended, has its delivery posted already.)
                    result = TakeResult();
                    registration = TakeRegistration();
                    deliver = true;
                }
            }

            if (deliver)
            {
                registration.Dispose();

                // The application's continuation runs here, on the loop thread: it handles the message and flushes its
                // reply (which the output sends at once) before OnReceived returns, as a callback handler would.
                _read.SetResult(result);
            }

            if (_pauseThreshold > 0 && Volatile.Read(ref _written) - Volatile.Read(ref _examined) >= _pauseThreshold && !_owner._inputDone)
            {
                bool pause = false;
                lock (_sync)
                {
                    if (!_readerCompleted && !_paused && _written - _examined >= _pauseThreshold)
                    {
                        _paused = true;
                        pause = true;
                    }
                }

                if (pause)
                {
                    Connection.PauseReceiving();
                }
            }
        }

        /// <summary>The input ends (loop thread): the peer's end of stream (no error: the reader gets the rest, then IsCompleted) or an error (the next read throws it).</summary>
        public void CompleteWriter(Exception? error)
        {
            bool post;
            lock (_sync)
            {
                if (_writerCompleted)
                {
                    return;
                }

                _writerCompleted = true;
                _writerError = error;
                post = NeedsDelivery();
            }

            if (post)
            {
                PostDelivery();
            }
        }

        /// <summary>Copies <paramref name="data"/> after the received bytes, filling the tail block, then new blocks (under the lock).</summary>
        private void Append(ReadOnlySpan<byte> data)
        {
            while (!data.IsEmpty)
            {
                Segment? tail = _tail;
                if (tail is null || tail.End == tail.Memory.Length)
                {
                    Segment next = RentSegment(data.Length, _written);
                    if (tail is null)
                    {
                        _head = next;
                        _headIndex = 0;
                    }
                    else
                    {
                        tail.SetNext(next);
                    }

                    _tail = tail = next;
                }

                int n = Math.Min(data.Length, tail.Memory.Length - tail.End);
                data.Slice(0, n).CopyTo(tail.Block.Span.Slice(tail.End));
                tail.End += n;
                _written += n;
                data = data.Slice(n);
            }

            _dataReady = true;
        }

        /// <summary>Links <paramref name="segment"/>, which holds the <paramref name="length"/> bytes received, after the received bytes (under the lock; the tail is full or there is none).</summary>
        private void Link(Segment segment, int length)
        {
            segment.Attach(this, _written, length);
            if (_tail is null)
            {
                _head = segment;
                _headIndex = 0;
            }
            else
            {
                _tail.SetNext(segment);
            }

            _tail = segment;
            _written += length;
            _dataReady = true;
        }

        /// <summary>The posted resume (loop thread): reads again, unless the input ended or receiving paused again meanwhile.</summary>
        private void ResumeOnLoop()
        {
            lock (_sync)
            {
                if (_paused || _readerCompleted)
                {
                    return;
                }
            }

            if (!_owner._inputDone && !_owner._isClosed)
            {
                Connection.ResumeReceiving();
            }
        }

        // ================= PipeReader (any thread, one reader at a time) =================

        public override bool TryRead(out ReadResult result)
        {
            lock (_sync)
            {
                CheckCanRead();
                if (IsReady || _written > _examined)
                {
                    ThrowIfWriterFailed();
                    result = TakeResult();
                    return true;
                }
            }

            result = default;
            return false;
        }

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                return new ValueTask<ReadResult>(Task.FromCanceled<ReadResult>(cancellationToken));
            }

            short version;
            lock (_sync)
            {
                CheckCanRead();
                if (IsReady)
                {
                    ThrowIfWriterFailed();
                    return new ValueTask<ReadResult>(TakeResult());
                }

                _read.Reset();
                version = _read.Version;
                _state = Waiting;
                _readToken = cancellationToken;
                _tokenFired = false;
            }

            if (cancellationToken.CanBeCanceled)
            {
                Register(cancellationToken, version);
            }

            return new ValueTask<ReadResult>(this, version);
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            Segment? freed;
            bool resume = false;
            lock (_sync)
            {
                if (_readerCompleted)
                {
                    throw new InvalidOperationException("Reading is not allowed after the reader was completed.");
                }

                if (_state != Held)
                {
                    throw new InvalidOperationException("No read to advance: call AdvanceTo once after each completed ReadAsync or successful TryRead.");
                }

                long consumedAt = Offset(consumed, nameof(consumed));
                long examinedAt = Offset(examined, nameof(examined));
                if (consumedAt > examinedAt)
                {
                    throw new ArgumentOutOfRangeException(nameof(consumed), "The consumed position is past the examined position.");
                }

                freed = Consume(consumedAt);

                // As a pipe: what was examined counts for backpressure (it may move back, to the consumed position), and a
                // read after examining everything waits for new bytes.
                _examined = examinedAt;
                if (examinedAt == _written)
                {
                    _dataReady = false;
                }

                _state = Idle;
                if (_paused && (_written - _examined < _resumeThreshold || _written == _examined))
                {
                    _paused = false;
                    resume = true;
                }
            }

            ReturnSegments(freed);
            if (resume && !Connection.Loop.TryPost(s_resumeOnLoop, this))
            {
                // The loop is gone, and the connection with it.
            }
        }

        public override void CancelPendingRead()
        {
            bool post;
            lock (_sync)
            {
                _cancelNext = true;
                post = NeedsDelivery();
            }

            if (post)
            {
                PostDelivery();
            }
        }

        public override void Complete(Exception? exception = null)
        {
            Segment? freed;
            bool post;
            lock (_sync)
            {
                if (_readerCompleted)
                {
                    return;
                }

                _readerCompleted = true;
                freed = _head;
                _head = _tail = null;
                _headIndex = 0;
                _consumed = _examined = _written;
                _dataReady = false;

                // A read still waiting (another thread completed the input under it, as DisposeAsync may) ends with an
                // InvalidOperationException rather than never.
                post = NeedsDelivery();
                if (_state == Held)
                {
                    _state = Idle;
                }
            }

            ReturnSegments(freed);
            if (post)
            {
                PostDelivery();
            }

            // Receiving stops for good (on the loop; from inside OnReceived, which then returns at once).
            if (Connection.Loop.IsOnLoopThread)
            {
                _owner.InputReaderCompletedOnLoop();
            }
            else if (!Connection.Loop.TryPost(s_readerCompletedOnLoop, this))
            {
                // The loop is gone, and the connection with it.
            }
        }

        // ================= the waiting read =================

        /// <summary>A read waits for bytes after those it examined, unless the read was canceled or the input ended.</summary>
        private bool IsReady => _cancelNext || _writerCompleted || _dataReady;

        /// <summary>Whether a waiting read can complete now and no delivery was posted yet (marks it posted). Under the lock.</summary>
        private bool NeedsDelivery()
        {
            if (_state != Waiting || _deliveryPosted)
            {
                return false;
            }

            _deliveryPosted = true;
            return true;
        }

        /// <summary>Completes the waiting read in a step of the loop's (or the pool's, once the loop is gone), where its continuation then runs.</summary>
        private void PostDelivery()
        {
            if (!Connection.Loop.TryPost(s_deliverOnLoop, this))
            {
                ThreadPool.UnsafeQueueUserWorkItem(s_deliverOnPool, this);
            }
        }

        private void Deliver()
        {
            ReadResult result = default;
            Exception? error = null;
            CancellationTokenRegistration registration;
            lock (_sync)
            {
                _deliveryPosted = false;
                if (_state != Waiting)
                {
                    return;
                }

                if (_readerCompleted)
                {
                    error = new InvalidOperationException("Reading is not allowed after the reader was completed.");
                    _state = Idle;
                }
                else if (_tokenFired)
                {
                    error = new OperationCanceledException(_readToken);
                    _state = Idle;
                }
                else if (!IsReady)
                {
                    return;
                }
                else if (_writerError is not null)
                {
                    error = _writerError;
                    _state = Idle;
                }
                else
                {
                    result = TakeResult();
                }

                registration = TakeRegistration();
            }

            registration.Dispose();
            if (error is null)
            {
                _read.SetResult(result);
            }
            else
            {
                _read.SetException(error);
            }
        }

        private void Register(CancellationToken cancellationToken, short version)
        {
#if NET5_0_OR_GREATER
            CancellationTokenRegistration registration = cancellationToken.UnsafeRegister(s_tokenCanceled, this);
#else
            CancellationTokenRegistration registration = cancellationToken.Register(s_tokenCanceled, this);
#endif
            lock (_sync)
            {
                if (_state == Waiting && _read.Version == version)
                {
                    _registration = registration;
                    return;
                }
            }

            // The read completed meanwhile.
            registration.Dispose();
        }

        private void TokenCanceled()
        {
            bool post;
            lock (_sync)
            {
                if (_state != Waiting || !_readToken.IsCancellationRequested)
                {
                    // An earlier read's token, fired as that read completed.
                    return;
                }

                _tokenFired = true;
                post = NeedsDelivery();
            }

            if (post)
            {
                PostDelivery();
            }
        }

        private CancellationTokenRegistration TakeRegistration()
        {
            CancellationTokenRegistration registration = _registration;
            _registration = default;
            _readToken = default;
            _tokenFired = false;
            return registration;
        }

        /// <summary>The result of a read (under the lock): the unconsumed bytes; the reader holds them until AdvanceTo.</summary>
        private ReadResult TakeResult()
        {
            bool canceled = _cancelNext;
            _cancelNext = false;
            _state = Held;
            ReadOnlySequence<byte> buffer = _head is null ? default : new ReadOnlySequence<byte>(_head, _headIndex, _tail!, _tail!.End);
            return new ReadResult(buffer, canceled, _writerCompleted);
        }

        private void CheckCanRead()
        {
            if (_readerCompleted)
            {
                throw new InvalidOperationException("Reading is not allowed after the reader was completed.");
            }

            if (_state != Idle)
            {
                throw new InvalidOperationException("A read is already in progress: await each ReadAsync and call AdvanceTo before the next read.");
            }
        }

        /// <summary>The input failed (a reset or another error): every read throws that exception at once, as a pipe's does.</summary>
        private void ThrowIfWriterFailed()
        {
            if (_writerCompleted && _writerError is not null)
            {
                ExceptionDispatchInfo.Capture(_writerError).Throw();
            }
        }

        /// <summary>The running index of <paramref name="position"/>, which must lie in the bytes not yet consumed.</summary>
        private long Offset(SequencePosition position, string name)
        {
            object? segment = position.GetObject();
            if (segment is null)
            {
                // The position of an empty buffer.
                return _consumed;
            }

            if (segment is not Segment s || !ReferenceEquals(s.Reader, this))
            {
                throw new InvalidOperationException($"The {name} position is not in the buffer of this reader's last read (a position from an older buffer?).");
            }

            long offset = s.RunningIndex + position.GetInteger();
            if (offset < _consumed || offset > _written)
            {
                throw new InvalidOperationException($"The {name} position is not in the buffer of this reader's last read (a position from an older buffer?).");
            }

            return offset;
        }

        /// <summary>Consumes up to <paramref name="offset"/> (under the lock); returns the segments now unused (their blocks are returned outside the lock).</summary>
        private Segment? Consume(long offset)
        {
            Segment? freed = null;
            Segment? freedTail = null;
            _consumed = offset;
            while (_head is { } head)
            {
                long end = head.RunningIndex + head.End;
                if (offset < end)
                {
                    _headIndex = (int)(offset - head.RunningIndex);
                    break;
                }

                bool last = ReferenceEquals(head, _tail);
                _head = last ? null : (Segment?)head.Next;
                _headIndex = 0;
                if (last)
                {
                    _tail = null;
                }

                head.SetNext(null);
                if (freedTail is null)
                {
                    freed = head;
                }
                else
                {
                    freedTail.SetNext(head);
                }

                freedTail = head;
                if (last)
                {
                    break;
                }
            }

            return freed;
        }

        // ================= IValueTaskSource<ReadResult> =================

        public ReadResult GetResult(short token) => _read.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _read.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            // No captured context: the continuation runs where the read completes (on the loop thread), as with the pipe.
            _read.OnCompleted(continuation, state, token, flags & ~ValueTaskSourceOnCompletedFlags.UseSchedulingContext);

        // ================= segments =================

        private static Segment TakeFreeSegment()
        {
            Segment? segment = t_freeSegments;
            if (segment is null)
            {
                return new Segment();
            }

            t_freeSegments = (Segment?)segment.Next;
            t_freeSegmentCount--;
            segment.SetNext(null);
            return segment;
        }

        private Segment RentSegment(int wanted, long runningIndex)
        {
            Segment segment = TakeFreeSegment();
            int size = Math.Min(Math.Max(wanted, PipeBlockPool.BlockSize), _maxBlock);
            IMemoryOwner<byte> owner = _pool.Rent(size);
            segment.Init(this, owner, runningIndex);
            return segment;
        }

        private static void ReturnSegments(Segment? segments)
        {
            while (segments is not null)
            {
                var next = (Segment?)segments.Next;
                segments.Release();
                if (t_freeSegmentCount < 64)
                {
                    segments.SetNext(t_freeSegments);
                    t_freeSegments = segments;
                    t_freeSegmentCount++;
                }

                segments = next;
            }
        }

        /// <summary>A block of received bytes: <see cref="ReadOnlySequenceSegment{T}.Memory"/> is the whole block, <see cref="End"/> how much of it holds bytes.</summary>
        private sealed class Segment : ReadOnlySequenceSegment<byte>
        {
            private IMemoryOwner<byte>? _owner;

            /// <summary>The reader the segment belongs to now; null while free.</summary>
            public LoopInputReader? Reader;

            /// <summary>The block, writable (the reader sees it read-only through the sequence).</summary>
            public Memory<byte> Block;

            /// <summary>The block's array, for a receive segment (see <see cref="t_receiveSegment"/>); else null.</summary>
            public byte[]? Array;

            /// <summary>Bytes written into the block (all of it for every segment but the tail).</summary>
            public int End;

            /// <summary>A segment over <paramref name="owner"/>'s block for <paramref name="reader"/> (null: a receive segment, whose block must be an array).</summary>
            public void Init(LoopInputReader? reader, IMemoryOwner<byte> owner, long runningIndex)
            {
                Reader = reader;
                _owner = owner;
                Block = owner.Memory;
                Memory = Block;
                RunningIndex = runningIndex;
                End = 0;
                if (reader is null)
                {
                    Array = MemoryMarshal.TryGetArray(Block, out ArraySegment<byte> array) && array.Offset == 0
                        ? array.Array
                        : throw new InvalidOperationException("The pipes' pool lends arrays.");
                }
            }

            /// <summary>A receive segment holding <paramref name="end"/> received bytes joins <paramref name="reader"/>'s buffer at <paramref name="runningIndex"/>.</summary>
            public void Attach(LoopInputReader reader, long runningIndex, int end)
            {
                Reader = reader;
                RunningIndex = runningIndex;
                End = end;
            }

            public void SetNext(Segment? next) => Next = next;

            public void Release()
            {
                Reader = null;
                _owner?.Dispose();
                _owner = null;
                Array = null;
                Block = default;
                Memory = default;
                End = 0;
                Next = null;
            }
        }
    }
}
