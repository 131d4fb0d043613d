using System;
using System.Buffers;

namespace EpollSharp.Connections;

/// <summary>
/// The bytes a connection could not send at once, in chunks rented from <see cref="ArrayPool{T}.Shared"/>.
/// A ring of chunks: appending copies into the last chunk's free space, then into new chunks; sending
/// consumes from the first. A drained queue holds no chunk. Not thread-safe (the loop thread owns it).
/// </summary>
internal sealed class SendQueue
{
    internal const int ChunkSize = 16 * 1024;

    private Chunk[] _ring = new Chunk[4];
    private int _head;
    private int _count;

    /// <summary>The bytes queued.</summary>
    public long Length { get; private set; }

    public bool IsEmpty => Length == 0;

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

            byte[] array = ArrayPool<byte>.Shared.Rent(ChunkSize);
            int n = Math.Min(array.Length, data.Length);
            data.Slice(0, n).CopyTo(array);
            _ring[(_head + _count) & (_ring.Length - 1)] = new Chunk(array, 0, n);
            _count++;
            Length += n;
            data = data.Slice(n);
        }
    }

    /// <summary>The first queued bytes (one chunk's worth). Only when not empty.</summary>
    public ArraySegment<byte> Peek()
    {
        ref Chunk head = ref _ring[_head];
        return new ArraySegment<byte>(head.Array, head.Start, head.End - head.Start);
    }

    /// <summary>How many chunks hold queued bytes.</summary>
    public int ChunkCount => _count;

    /// <summary>The queued bytes of chunk <paramref name="index"/> (0 is Peek's).</summary>
    public ArraySegment<byte> ChunkAt(int index)
    {
        ref Chunk chunk = ref _ring[(_head + index) & (_ring.Length - 1)];
        return new ArraySegment<byte>(chunk.Array, chunk.Start, chunk.End - chunk.Start);
    }

    /// <summary>Removes <paramref name="count"/> bytes from the front, across chunks.</summary>
    public void ConsumeAcross(long count)
    {
        while (count > 0)
        {
            int n = (int)Math.Min(count, Peek().Count);
            Consume(n);
            count -= n;
        }
    }

    /// <summary>Removes <paramref name="count"/> bytes (at most <see cref="Peek"/>'s count) from the front; returns a drained chunk to the pool.</summary>
    public void Consume(int count)
    {
        ref Chunk head = ref _ring[_head];
        head.Start += count;
        Length -= count;
        if (head.Start == head.End)
        {
            ArrayPool<byte>.Shared.Return(head.Array);
            head = default;
            _head = (_head + 1) & (_ring.Length - 1);
            _count--;
            if (_count == 0)
            {
                _head = 0;
            }
        }
    }

    /// <summary>Drops everything queued and returns the chunks to the pool.</summary>
    public void Clear()
    {
        while (_count > 0)
        {
            ref Chunk head = ref _ring[_head];
            ArrayPool<byte>.Shared.Return(head.Array);
            head = default;
            _head = (_head + 1) & (_ring.Length - 1);
            _count--;
        }

        _head = 0;
        Length = 0;
    }

    private void Grow()
    {
        var ring = new Chunk[_ring.Length * 2];
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
}
