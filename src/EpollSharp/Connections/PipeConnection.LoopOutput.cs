using System;
using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;

namespace EpollSharp.Connections;

// With continuations on the loop, the application's output is not a System.IO.Pipelines Pipe but this writer, made for
// the case: a flush on the loop thread hands the bytes to Connection.Write at once (no pipe between, no lock, no reader
// to wake), and only what the connection cannot take yet (its backlog at the high watermark) waits here, in the
// application's own buffers, until OnWriteResumed. A flush from another thread (the documented contract lets any thread
// use Transport, one writer at a time) hands its buffers to the loop through a locked inbox and a post, and completes once
// the loop took them. The writer's buffers (GetMemory, Advance) belong to whoever writes; once flushed, to the loop.
public sealed partial class PipeConnection
{
    /// <summary>The application's output with continuations on the loop (else null: the <see cref="_output"/> pipe).</summary>
    private readonly LoopOutputWriter? _loopOutput;

    /// <summary>The application's output writer, whichever kind.</summary>
    private PipeWriter OutputWriter => _loopOutput ?? (PipeWriter)_output!.Writer;

    /// <summary>
    /// A <see cref="PipeWriter"/> whose flushes hand the bytes to the connection directly (see above). Backpressure as the
    /// pipe's: a flush waits while the bytes flushed but not yet taken by the connection are at
    /// <see cref="PipeConnectionOptions.OutputPauseThreshold"/>, until they drain below
    /// <see cref="PipeConnectionOptions.OutputResumeThreshold"/>; its continuation is posted to the loop.
    /// </summary>
    private sealed class LoopOutputWriter : PipeWriter, IValueTaskSource<FlushResult>
    {
        private static readonly Action<object?> s_drainInbox = static state => ((LoopOutputWriter)state!).DrainInboxOnLoop();
        private static readonly Action<object?> s_cancelFlushOnLoop = static state => ((LoopOutputWriter)state!).CancelFlushOnLoop();
        private static readonly Action<object?> s_tokenCanceled = static state => ((LoopOutputWriter)state!).TokenCanceled();
        private static readonly Action<object?> s_completed = static _ => { };
        private static readonly WaitCallback s_runOnPool = static state =>
        {
            var (action, actionState) = ((Action<object?>, object?))state!;
            action(actionState);
        };

        /// <summary>Free chunk objects of this thread (a loop thread rents and returns them for each message).</summary>
        [ThreadStatic]
        private static Chunk? t_freeChunks;

        [ThreadStatic]
        private static int t_freeChunkCount;

        private readonly PipeConnection _owner;
        private readonly MemoryPool<byte> _pool;
        private readonly int _minimumChunk;
        private readonly long _pauseThreshold;
        private readonly long _resumeThreshold;

        // ---- the writer's side (whichever thread writes; one at a time) ----

        /// <summary>Written, not yet flushed: <see cref="_writeHead"/> .. <see cref="_writeTail"/> (the tail is the one GetMemory hands out).</summary>
        private Chunk? _writeHead;
        private Chunk? _writeTail;
        private long _unflushed;
        private bool _writerCompleted;

        // ---- handed over from another thread (under _inboxLock) ----
        private readonly object _inboxLock = new();
        private Chunk? _inboxHead;
        private Chunk? _inboxTail;
        private volatile bool _inboxBusy;

        /// <summary>Off the loop: the writer completed (with <see cref="_inboxError"/>); the loop acts on it after the inbox's bytes.</summary>
        private bool _inboxComplete;
        private Exception? _inboxError;

        /// <summary>Off the loop: the flush that handed over the inbox waits for the loop.</summary>
        private bool _inboxFlush;

        // ---- the loop's side ----

        /// <summary>Flushed, not yet taken by the connection (the first one perhaps partly).</summary>
        private Chunk? _pendingHead;
        private Chunk? _pendingTail;
        private long _pending;

        /// <summary>The output is over (the connection closed, or the application completed and all went out).</summary>
        private bool _done;
        private Exception? _doneError;

        /// <summary>A <c>CancelPendingFlush</c> came while no flush waited: the next flush returns canceled.</summary>
        private bool _cancelNext;

        // ---- the one waiting flush ----
        private short _version;
        private int _flushState; // 0 none, 1 waiting, 2 completed
        private FlushResult _flushResult;
        private ExceptionDispatchInfo? _flushError;
        private Action<object?>? _continuation;
        private object? _continuationState;
        private CancellationTokenRegistration _registration;
        private CancellationToken _flushToken;

        public LoopOutputWriter(PipeConnection owner, PipeConnectionOptions options)
        {
            _owner = owner;
            _pool = options.MemoryPool ?? PipeBlockPool.Instance;
            _minimumChunk = options.MemoryPool is null ? PipeBlockPool.LargeBlockSize : 4096;
            _pauseThreshold = options.OutputPauseThreshold;
            _resumeThreshold = options.OutputPauseThreshold == 0 ? 0 : options.OutputResumeThreshold;
        }

        private Connection Connection => _owner.Connection;

        private bool OnLoop => _owner.Connection.Loop.IsOnLoopThread;

        // ================= PipeWriter =================

        public override bool CanGetUnflushedBytes => true;

        public override long UnflushedBytes => _unflushed;

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            if (sizeHint < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(sizeHint), sizeHint, "sizeHint must be 0 or more.");
            }

            ThrowIfWriterCompleted();
            Chunk? tail = _writeTail;
            int wanted = Math.Max(sizeHint, 1);
            if (tail is null || tail.Memory.Length - tail.Length < wanted)
            {
                tail = RentChunk(sizeHint);
                if (_writeTail is null)
                {
                    _writeHead = tail;
                }
                else
                {
                    _writeTail.Next = tail;
                }

                _writeTail = tail;
            }

            return tail.Memory.Slice(tail.Length);
        }

        public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

        public override void Advance(int bytes)
        {
            Chunk? tail = _writeTail;
            if (bytes < 0 || (tail is null ? bytes > 0 : bytes > tail.Memory.Length - tail.Length))
            {
                throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "More bytes than the memory GetMemory returned (or negative).");
            }

            if (tail is not null)
            {
                tail.Length += bytes;
                _unflushed += bytes;
            }
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            ThrowIfWriterCompleted();
            if (Volatile.Read(ref _flushState) == 1)
            {
                throw new InvalidOperationException("A flush is already in progress: await each FlushAsync before the next.");
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return new ValueTask<FlushResult>(Task.FromCanceled<FlushResult>(cancellationToken));
            }

            Chunk? flushed = TakeWritten();
            if (OnLoop && !_inboxBusy)
            {
                // The fast path: the bytes go to the connection now.
                Append(flushed);
                SendPending();
                if (_cancelNext)
                {
                    _cancelNext = false;
                    return new ValueTask<FlushResult>(new FlushResult(isCanceled: true, isCompleted: _done));
                }

                if (_done)
                {
                    return _doneError is null ? new ValueTask<FlushResult>(new FlushResult(false, true)) : new ValueTask<FlushResult>(Task.FromException<FlushResult>(_doneError));
                }

                if (_pauseThreshold == 0 || _pending < _pauseThreshold)
                {
                    return new ValueTask<FlushResult>(new FlushResult(false, false));
                }

                return Wait(cancellationToken);
            }

            // Another thread (or the inbox still holds an earlier hand-over): through the inbox, in order.
            ValueTask<FlushResult> wait = Wait(cancellationToken);
            HandOver(flushed, complete: false, error: null, flush: true);
            return wait;
        }

        public override void CancelPendingFlush()
        {
            if (OnLoop)
            {
                CancelFlushOnLoop();
            }
            else if (!Connection.Loop.TryPost(s_cancelFlushOnLoop, this))
            {
                CompleteFlush(new FlushResult(isCanceled: true, isCompleted: true), null);
            }
        }

        public override void Complete(Exception? exception = null)
        {
            if (_writerCompleted)
            {
                return;
            }

            _writerCompleted = true;
            Chunk? written = TakeWritten();
            if (OnLoop && !_inboxBusy)
            {
                Append(written);
                CompleteOnLoop(exception);
            }
            else
            {
                HandOver(written, complete: true, error: exception, flush: false);
            }
        }

        // ================= the loop's side =================

        /// <summary>The backlog drained to the low watermark: sends what waits, and completes a waiting flush below the resume threshold.</summary>
        public void OnWriteResumed()
        {
            if (_done)
            {
                return;
            }

            SendPending();
            CheckWaitingFlush();
        }

        /// <summary>The connection closed: drops what waits and ends the output (flushes then end with IsCompleted, or throw <paramref name="error"/>).</summary>
        public void OnConnectionClosed(Exception? error) => Finish(error);

        /// <summary>Appends flushed chunks to the pending list (loop thread).</summary>
        private void Append(Chunk? chunks)
        {
            if (chunks is null)
            {
                return;
            }

            if (_done)
            {
                // Nothing takes them any more.
                ReturnChunks(chunks);
                return;
            }

            long bytes = 0;
            Chunk last = chunks;
            for (Chunk? c = chunks; c is not null; c = c.Next)
            {
                bytes += c.Length;
                last = c;
            }

            if (_pendingTail is null)
            {
                _pendingHead = chunks;
            }
            else
            {
                _pendingTail.Next = chunks;
            }

            _pendingTail = last;
            _pending += bytes;
        }

        /// <summary>Hands pending bytes to the connection until none is left or its backlog is full (loop thread).</summary>
        private void SendPending()
        {
            while (_pendingHead is { } head && !_done)
            {
                if (Connection.IsWritePaused)
                {
                    return;
                }

                ReadOnlySpan<byte> chunk = head.Memory.Span.Slice(head.Sent, head.Length - head.Sent);
                if (chunk.Length < MaxWriteChunk && head.Next is not null && head.Next.Length > 0)
                {
                    // Several chunks: gathered into the loop thread's scratch buffer, one Write (one send) for up to MaxWriteChunk.
                    Span<byte> scratch = WriteScratch;
                    int gathered = 0;
                    for (Chunk? c = head; c is not null && gathered < scratch.Length; c = c.Next)
                    {
                        int start = c == head ? c.Sent : 0;
                        int n = Math.Min(c.Length - start, scratch.Length - gathered);
                        c.Memory.Span.Slice(start, n).CopyTo(scratch.Slice(gathered));
                        gathered += n;
                    }

                    chunk = scratch.Slice(0, gathered);
                }
                else if (chunk.Length > MaxWriteChunk)
                {
                    chunk = chunk.Slice(0, MaxWriteChunk);
                }

                int length = chunk.Length;
                if (length > 0 && !Connection.Write(chunk))
                {
                    // The output is shut, or the connection closed inside the Write (OnClosed finished the output).
                    Finish(_owner._closeError);
                    return;
                }

                if (_done)
                {
                    return;
                }

                _pending -= length;
                Consume(length);
            }
        }

        /// <summary>Drops <paramref name="bytes"/> sent bytes from the head of the pending list, returning emptied chunks.</summary>
        private void Consume(int bytes)
        {
            while (_pendingHead is { } head && (bytes > 0 || head.Sent == head.Length))
            {
                int left = head.Length - head.Sent;
                if (bytes < left)
                {
                    head.Sent += bytes;
                    return;
                }

                bytes -= left;
                _pendingHead = head.Next;
                if (_pendingHead is null)
                {
                    _pendingTail = null;
                }

                head.Next = null;
                ReturnChunk(head);
            }
        }

        /// <summary>The writer completed (loop thread): graceful once all went out, or a reset with an exception.</summary>
        private void CompleteOnLoop(Exception? exception)
        {
            if (_done)
            {
                return;
            }

            if (exception is not null)
            {
                // Reset, as Kestrel's abort does.
                Finish(_owner._closeError);
                _owner.AbortOnLoop();
                return;
            }

            _closing = true;
            SendPending();
            FinishIfDrained();
        }

        /// <summary>The application completed the output: once the pending bytes went out, the connection closes gracefully.</summary>
        private bool _closing;

        private void FinishIfDrained()
        {
            if (_closing && !_done && _pendingHead is null)
            {
                Finish(null);
                _owner.CloseFromOutput();
            }
        }

        /// <summary>Ends the output: drops what waits, completes a waiting flush (loop thread, or where the loop is gone).</summary>
        private void Finish(Exception? error)
        {
            if (_done)
            {
                return;
            }

            _done = true;
            _doneError = error;
            Chunk? pending = _pendingHead;
            _pendingHead = _pendingTail = null;
            _pending = 0;
            ReturnChunks(pending);
            if (Volatile.Read(ref _flushState) == 1)
            {
                CompleteFlush(new FlushResult(false, true), error is null ? null : ExceptionDispatchInfo.Capture(error));
            }
        }

        private void CheckWaitingFlush()
        {
            FinishIfDrained();
            if (!_done && Volatile.Read(ref _flushState) == 1 && (_pauseThreshold == 0 || _pending < _resumeThreshold || _pending == 0))
            {
                CompleteFlush(new FlushResult(false, false), null);
            }
        }

        private void CancelFlushOnLoop()
        {
            if (Volatile.Read(ref _flushState) == 1)
            {
                CompleteFlush(new FlushResult(isCanceled: true, isCompleted: _done), null);
            }
            else
            {
                _cancelNext = true;
            }
        }

        // ================= hand-over from another thread =================

        private void HandOver(Chunk? chunks, bool complete, Exception? error, bool flush)
        {
            bool post;
            lock (_inboxLock)
            {
                if (chunks is not null)
                {
                    if (_inboxTail is null)
                    {
                        _inboxHead = chunks;
                    }
                    else
                    {
                        _inboxTail.Next = chunks;
                    }

                    Chunk last = chunks;
                    while (last.Next is not null)
                    {
                        last = last.Next;
                    }

                    _inboxTail = last;
                }

                if (complete)
                {
                    _inboxComplete = true;
                    _inboxError = error;
                }

                _inboxFlush |= flush;
                post = !_inboxBusy;
                _inboxBusy = true;
            }

            if (post && !Connection.Loop.TryPost(s_drainInbox, this))
            {
                // The loop is gone, and the connection with it.
                Chunk? dropped;
                lock (_inboxLock)
                {
                    dropped = _inboxHead;
                    _inboxHead = _inboxTail = null;
                    _inboxBusy = false;
                }

                ReturnChunks(dropped);
                CompleteFlush(new FlushResult(false, true), _owner._closeError is { } e ? ExceptionDispatchInfo.Capture(e) : null);
            }
        }

        private void DrainInboxOnLoop()
        {
            Chunk? chunks;
            bool complete;
            bool flush;
            Exception? error;
            lock (_inboxLock)
            {
                chunks = _inboxHead;
                _inboxHead = _inboxTail = null;
                complete = _inboxComplete;
                _inboxComplete = false;
                error = _inboxError;
                _inboxError = null;
                flush = _inboxFlush;
                _inboxFlush = false;
                _inboxBusy = false;
            }

            Append(chunks);
            SendPending();
            if (complete)
            {
                CompleteOnLoop(error);
            }

            if (_done)
            {
                if (Volatile.Read(ref _flushState) == 1)
                {
                    CompleteFlush(new FlushResult(false, true), _doneError is null ? null : ExceptionDispatchInfo.Capture(_doneError));
                }

                return;
            }

            if (flush && Volatile.Read(ref _flushState) == 1)
            {
                if (_cancelNext)
                {
                    _cancelNext = false;
                    CompleteFlush(new FlushResult(isCanceled: true, isCompleted: false), null);
                }
                else if (_pauseThreshold == 0 || _pending < _pauseThreshold)
                {
                    // As a flush on the loop: it waits only at the pause threshold.
                    CompleteFlush(new FlushResult(false, false), null);
                }

                return;
            }

            CheckWaitingFlush();
        }

        // ================= the waiting flush (IValueTaskSource) =================

        private ValueTask<FlushResult> Wait(CancellationToken cancellationToken)
        {
            _flushResult = default;
            _flushError = null;
            _continuation = null;
            _continuationState = null;
            Volatile.Write(ref _flushState, 1);
            _flushToken = cancellationToken;
            if (cancellationToken.CanBeCanceled)
            {
#if NET5_0_OR_GREATER
                _registration = cancellationToken.UnsafeRegister(s_tokenCanceled, this);
#else
                _registration = cancellationToken.Register(s_tokenCanceled, this);
#endif
            }

            return new ValueTask<FlushResult>(this, _version);
        }

        private void TokenCanceled()
        {
            if (!_flushToken.IsCancellationRequested)
            {
                // Posted for an earlier flush, which completed meanwhile: this one's token is another.
                return;
            }

            if (OnLoop)
            {
                CompleteFlush(default, ExceptionDispatchInfo.Capture(new OperationCanceledException(_flushToken)));
            }
            else if (!Connection.Loop.TryPost(static s => ((LoopOutputWriter)s!).TokenCanceled(), this))
            {
                CompleteFlush(default, ExceptionDispatchInfo.Capture(new OperationCanceledException(_flushToken)));
            }
        }

        /// <summary>Completes the waiting flush, once; its continuation goes to the loop (or the pool once the loop is gone).</summary>
        private void CompleteFlush(FlushResult result, ExceptionDispatchInfo? error)
        {
            if (Interlocked.CompareExchange(ref _flushState, 2, 1) != 1)
            {
                return;
            }

            _registration.Dispose();
            _registration = default;
            _flushResult = result;
            _flushError = error;
            Action<object?>? continuation = Interlocked.Exchange(ref _continuation, s_completed);
            if (continuation is not null && !ReferenceEquals(continuation, s_completed))
            {
                Schedule(continuation, _continuationState);
            }
        }

        private void Schedule(Action<object?> continuation, object? state)
        {
            if (!Connection.Loop.TryPost(continuation, state))
            {
                // The loop is gone: the pool, so that the await still finishes.
                ThreadPool.UnsafeQueueUserWorkItem(s_runOnPool, (continuation, state));
            }
        }

        public FlushResult GetResult(short token)
        {
            CheckToken(token);
            if (Volatile.Read(ref _flushState) != 2)
            {
                throw new InvalidOperationException("The flush has not completed.");
            }

            FlushResult result = _flushResult;
            ExceptionDispatchInfo? error = _flushError;
            _flushError = null;
            _version++;
            Volatile.Write(ref _flushState, 0);
            error?.Throw();
            return result;
        }

        public ValueTaskSourceStatus GetStatus(short token)
        {
            CheckToken(token);
            if (Volatile.Read(ref _flushState) != 2)
            {
                return ValueTaskSourceStatus.Pending;
            }

            return _flushError is null ? ValueTaskSourceStatus.Succeeded
                : _flushError.SourceException is OperationCanceledException ? ValueTaskSourceStatus.Canceled : ValueTaskSourceStatus.Faulted;
        }

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        {
            CheckToken(token);
            _continuationState = state;
            if (ReferenceEquals(Interlocked.CompareExchange(ref _continuation, continuation, null), s_completed))
            {
                // Completed meanwhile: run where the continuations run.
                Schedule(continuation, state);
            }
        }

        private void CheckToken(short token)
        {
            if (token != _version)
            {
                throw new InvalidOperationException("The flush's ValueTask was awaited twice, or after it was used.");
            }
        }

        // ================= chunks =================

        private void ThrowIfWriterCompleted()
        {
            if (_writerCompleted)
            {
                throw new InvalidOperationException("Writing is not allowed after the writer was completed.");
            }
        }

        /// <summary>Takes the written chunks (the writer's side), leaving none.</summary>
        private Chunk? TakeWritten()
        {
            Chunk? head = _writeHead;
            _writeHead = _writeTail = null;
            _unflushed = 0;
            return head;
        }

        private Chunk RentChunk(int sizeHint)
        {
            Chunk? chunk = t_freeChunks;
            if (chunk is not null)
            {
                t_freeChunks = chunk.Next;
                t_freeChunkCount--;
                chunk.Next = null;
            }
            else
            {
                chunk = new Chunk();
            }

            int size = Math.Max(sizeHint, _minimumChunk);
            int max = _pool.MaxBufferSize;
            if (size <= (max < 0 ? int.MaxValue : max))
            {
                IMemoryOwner<byte> owner = _pool.Rent(size);
                chunk.Owner = owner;
                chunk.Memory = owner.Memory;
            }
            else
            {
                byte[] array = ArrayPool<byte>.Shared.Rent(size);
                chunk.Array = array;
                chunk.Memory = array;
            }

            return chunk;
        }

        private static void ReturnChunks(Chunk? chunks)
        {
            while (chunks is not null)
            {
                Chunk next = chunks.Next!;
                chunks.Next = null;
                ReturnChunk(chunks);
                chunks = next;
            }
        }

        private static void ReturnChunk(Chunk chunk)
        {
            chunk.Owner?.Dispose();
            if (chunk.Array is { } array)
            {
                ArrayPool<byte>.Shared.Return(array);
            }

            chunk.Owner = null;
            chunk.Array = null;
            chunk.Memory = default;
            chunk.Length = 0;
            chunk.Sent = 0;
            if (t_freeChunkCount < 64)
            {
                chunk.Next = t_freeChunks;
                t_freeChunks = chunk;
                t_freeChunkCount++;
            }
        }

        /// <summary>A buffer of the output: its memory, how much is written, how much of it the connection took.</summary>
        private sealed class Chunk
        {
            public IMemoryOwner<byte>? Owner;
            public byte[]? Array;
            public Memory<byte> Memory;
            public int Length;
            public int Sent;
            public Chunk? Next;
        }
    }
}
