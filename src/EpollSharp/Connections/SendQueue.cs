using System;
using System.Buffers;
using EpollSharp.Backends;

namespace EpollSharp.Connections;

/// <summary>
/// The bytes a connection could not send at once (on io_uring's completion path: every byte until its send completes),
/// in pooled chunks. A ring of chunks: appending copies into the last chunk's free space, then into new chunks; sending
/// consumes from the first. A drained queue holds no chunk. Not thread-safe (the loop thread owns it).
/// </summary>
/// <remarks>
/// Chunks come from a cache of the calling thread (<see cref="ChunkCache"/>), then from <see cref="ArrayPool{T}.Shared"/>.
/// The shared pool keeps only 32 arrays of a size per core: with a send in flight on each of hundreds of connections,
/// which is the completion path's steady state, most rents would allocate. The first chunk of an empty queue is a small
/// one when the bytes fit, so that a 64-byte message in flight holds 1 KiB, not 16 KiB.
/// <para>On io_uring's completion path an empty queue may instead take, as its front, bytes of a provided receive buffer
/// that the handler writes back from the span it was handed (<see cref="Borrow"/>): they are sent from there, with no
/// copy, and the buffer is given back to the backend once they are consumed or the queue is cleared.</para>
/// </remarks>
internal sealed unsafe class SendQueue
{
    internal const int ChunkSize = 16 * 1024;

    /// <summary>The size of the first chunk of an empty queue when the bytes appended fit in it.</summary>
    internal const int SmallChunkSize = 1024;

    /// <summary>
    /// The chunks, a power of two in length: none until the first chunk is appended (a queue that only ever held borrowed
    /// fronts, as an echo on the completion path does, carries no ring), then 4, doubling.
    /// </summary>
    private Chunk[] _ring = Array.Empty<Chunk>();
    private int _head;
    private int _count;

    /// <summary>The borrowed front (bytes of a provided receive buffer), before the chunks; <see cref="_borrowedLength"/> 0 when none.</summary>
    private byte* _borrowed;

    private int _borrowedLength;

    private ushort _borrowedBuffer;


    /// <summary>The bytes queued (a borrowed front's included).</summary>
    public long Length { get; private set; }

    public bool IsEmpty => Length == 0;

    /// <summary>Whether the front is borrowed bytes of a provided receive buffer (<see cref="Borrow"/>), sent before the chunks.</summary>
    public bool HasBorrowed => _borrowedLength > 0;

    /// <summary>The borrowed front's address. Only when <see cref="HasBorrowed"/>.</summary>
    public IntPtr BorrowedAddress => (IntPtr)_borrowed;

    /// <summary>The borrowed front's length (0 when none).</summary>
    public int BorrowedLength => _borrowedLength;

    /// <summary>
    /// Makes <paramref name="length"/> bytes at <paramref name="address"/>, in provided buffer <paramref name="bufferId"/>,
    /// the front of this empty queue, without copying them. The caller kept the buffer
    /// (<see cref="ICompletionIo.KeepReceiveBuffer"/>); the queue gives it back (<see cref="ICompletionIo.ReleaseReceiveBuffer"/>)
    /// to the backend that the calls which consume, copy or clear the bytes name (the queue does not hold it: a connection
    /// has one, and every byte a queue holds counts against an idle connection's memory).
    /// </summary>
    public void Borrow(byte* address, int length, ushort bufferId)
    {
        if (Length != 0 || length <= 0)
        {
            throw new InvalidOperationException("Only an empty queue borrows, and only bytes.");
        }

        _borrowed = address;
        _borrowedLength = length;
        _borrowedBuffer = bufferId;
        Length = length;
    }

    /// <summary>Copies <paramref name="data"/> to the end of the queue.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (_count > 0)
        {
            ref Chunk tail = ref _ring[(_head + _count - 1) & (_ring.Length - 1)];
            int room = tail.Array.Length - tail.End;
            if (room > 0)
            {
                int n = Math.Min(room, data.Length);
                data.Slice(0, n).CopyTo(tail.Array.AsSpan(tail.End));
                tail.End += n;
                Length += n;
                data = data.Slice(n);
            }
        }

        while (!data.IsEmpty)
        {
            if (_count == _ring.Length)
            {
                Grow();
            }

            byte[] array = ChunkCache.Rent(_count == 0 && data.Length <= SmallChunkSize ? SmallChunkSize : ChunkSize);
            int n = Math.Min(array.Length, data.Length);
            data.Slice(0, n).CopyTo(array);
            _ring[(_head + _count) & (_ring.Length - 1)] = new Chunk(array, 0, n);
            _count++;
            Length += n;
            data = data.Slice(n);
        }
    }

    /// <summary>
    /// Copies the borrowed front into chunks at the front of the queue and gives its buffer back (a send took only part of
    /// it: the rest may wait for the peer for long, and must not keep a provided buffer meanwhile).
    /// </summary>
    /// <param name="owner">The backend whose buffer the front is.</param>
    public void CopyBorrowed(ICompletionIo owner)
    {
        int length = _borrowedLength;
        if (length == 0)
        {
            return;
        }

        int chunks = (length + ChunkSize - 1) / ChunkSize;
        while (_count + chunks > _ring.Length)
        {
            Grow();
        }

        // Last piece first, each in a new chunk before the current head.
        var bytes = new ReadOnlySpan<byte>(_borrowed, length);
        for (int i = chunks - 1; i >= 0; i--)
        {
            int start = i * ChunkSize;
            int n = Math.Min(ChunkSize, length - start);
            byte[] array = ChunkCache.Rent(_count == 0 && n <= SmallChunkSize ? SmallChunkSize : ChunkSize);
            bytes.Slice(start, n).CopyTo(array);
            _head = (_head - 1) & (_ring.Length - 1);
            _ring[_head] = new Chunk(array, 0, n);
            _count++;
        }

        // Length is unchanged: the same bytes, now in chunks.
        _borrowedLength = 0;
        ReleaseBorrowed(owner);
    }

    /// <summary>The first queued bytes: the borrowed front, or the first chunk's. Only when not empty.</summary>
    public ReadOnlySpan<byte> PeekSpan() =>
        _borrowedLength > 0 ? new ReadOnlySpan<byte>(_borrowed, _borrowedLength) : (ReadOnlySpan<byte>)Peek();

    /// <summary>The first chunk's queued bytes. Only when chunks are queued (not for a borrowed front).</summary>
    public ArraySegment<byte> Peek()
    {
        ref Chunk head = ref _ring[_head];
        return new ArraySegment<byte>(head.Array, head.Start, head.End - head.Start);
    }

    /// <summary>How many chunks hold queued bytes (a borrowed front is not one).</summary>
    public int ChunkCount => _count;

    /// <summary>The queued bytes of chunk <paramref name="index"/> (0 is Peek's).</summary>
    public ArraySegment<byte> ChunkAt(int index)
    {
        ref Chunk chunk = ref _ring[(_head + index) & (_ring.Length - 1)];
        return new ArraySegment<byte>(chunk.Array, chunk.Start, chunk.End - chunk.Start);
    }

    /// <summary>Removes <paramref name="count"/> bytes from the front, across chunks.</summary>
    /// <param name="count">The bytes sent.</param>
    /// <param name="owner">The backend whose buffer a borrowed front is (null when the queue never borrows).</param>
    public void ConsumeAcross(long count, ICompletionIo? owner)
    {
        while (count > 0)
        {
            int n = (int)Math.Min(count, _borrowedLength > 0 ? _borrowedLength : Peek().Count);
            Consume(n, owner);
            count -= n;
        }
    }

    /// <summary>
    /// Removes <paramref name="count"/> bytes (at most <see cref="PeekSpan"/>'s length) from the front; returns a drained
    /// chunk to the pool, and a consumed borrowed front's buffer to its backend.
    /// </summary>
    /// <param name="count">The bytes sent.</param>
    /// <param name="owner">The backend whose buffer a borrowed front is (null when the queue never borrows).</param>
    public void Consume(int count, ICompletionIo? owner)
    {
        if (_borrowedLength > 0)
        {
            _borrowed += count;
            _borrowedLength -= count;
            Length -= count;
            if (_borrowedLength == 0)
            {
                ReleaseBorrowed(owner);
            }

            return;
        }

        ref Chunk head = ref _ring[_head];
        head.Start += count;
        Length -= count;
        if (head.Start == head.End)
        {
            ChunkCache.Return(head.Array);
            head = default;
            _head = (_head + 1) & (_ring.Length - 1);
            _count--;
            if (_count == 0)
            {
                _head = 0;
            }
        }
    }

    /// <summary>Drops everything queued and returns the chunks to the pool (and a borrowed front's buffer to its backend).</summary>
    /// <param name="owner">The backend whose buffer a borrowed front is (null when the queue never borrows).</param>
    public void Clear(ICompletionIo? owner = null)
    {
        if (_borrowedLength > 0)
        {
            _borrowedLength = 0;
            ReleaseBorrowed(owner);
        }

        while (_count > 0)
        {
            ref Chunk head = ref _ring[_head];
            ChunkCache.Return(head.Array);
            head = default;
            _head = (_head + 1) & (_ring.Length - 1);
            _count--;
        }

        _head = 0;
        Length = 0;
    }

    /// <summary>Gives the borrowed front's buffer back to <paramref name="owner"/> (its bytes are consumed or dropped).</summary>
    private void ReleaseBorrowed(ICompletionIo? owner)
    {
        _borrowed = null;
        if (owner is null)
        {
            throw new InvalidOperationException("A queue with a borrowed front was consumed or cleared without the backend that lent it.");
        }

        owner.ReleaseReceiveBuffer(_borrowedBuffer);
    }

    private void Grow()
    {
        var ring = new Chunk[Math.Max(4, _ring.Length * 2)];
        for (int i = 0; i < _count; i++)
        {
            ring[i] = _ring[(_head + i) & (_ring.Length - 1)];
        }

        _ring = ring;
        _head = 0;
    }

    private struct Chunk
    {
        public byte[] Array;
        public int Start;
        public int End;

        public Chunk(byte[] array, int start, int end)
        {
            Array = array;
            Start = start;
            End = end;
        }
    }

    /// <summary>
    /// Free chunks of one thread (in practice a loop thread, which rents and returns them): at most
    /// <see cref="MaxSmall"/> small and <see cref="MaxLarge"/> large ones (2 MiB in all); misses and overflow go to
    /// <see cref="ArrayPool{T}.Shared"/>. No lock: each thread has its own.
    /// </summary>
    internal sealed class ChunkCache
    {
        internal const int MaxSmall = 1024;
        internal const int MaxLarge = 64;

        [ThreadStatic]
        private static ChunkCache? t_cache;

        private readonly byte[][] _small = new byte[MaxSmall][];
        private readonly byte[][] _large = new byte[MaxLarge][];
        private int _smallCount;
        private int _largeCount;

        /// <summary>A chunk of exactly <paramref name="size"/> bytes (<see cref="SmallChunkSize"/> or <see cref="ChunkSize"/>).</summary>
        public static byte[] Rent(int size)
        {
            ChunkCache? cache = t_cache;
            if (cache is not null)
            {
                if (size == SmallChunkSize && cache._smallCount > 0)
                {
                    byte[] array = cache._small[--cache._smallCount];
                    cache._small[cache._smallCount] = null!;
                    return array;
                }

                if (size == ChunkSize && cache._largeCount > 0)
                {
                    byte[] array = cache._large[--cache._largeCount];
                    cache._large[cache._largeCount] = null!;
                    return array;
                }
            }

            // The shared pool's buckets are powers of two, so both sizes come back exact.
            return ArrayPool<byte>.Shared.Rent(size);
        }

        /// <summary>Gives a chunk back to this thread's cache, or to the shared pool when the cache is full.</summary>
        public static void Return(byte[] array)
        {
            ChunkCache cache = t_cache ??= new ChunkCache();
            if (array.Length == SmallChunkSize && cache._smallCount < MaxSmall)
            {
                cache._small[cache._smallCount++] = array;
            }
            else if (array.Length == ChunkSize && cache._largeCount < MaxLarge)
            {
                cache._large[cache._largeCount++] = array;
            }
            else
            {
                ArrayPool<byte>.Shared.Return(array);
            }
        }
    }
}
