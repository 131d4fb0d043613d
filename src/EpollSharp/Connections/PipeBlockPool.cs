using System;
using System.Buffers;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// The pipes' default pool (<see cref="PipeConnectionOptions.MemoryPool"/> left null): blocks of <see cref="BlockSize"/>
/// bytes, kept for reuse when returned (up to <see cref="MaxRetained"/> of them), so renting allocates nothing once enough
/// blocks exist. <see cref="ArrayPool{T}.Shared"/>, which the pipes use for <see cref="MemoryPool{T}.Shared"/>, keeps only a
/// few arrays per size and core: a loop serving tens of connections has more segments rented at once than that, and each
/// rent past them allocates a new 4 KiB array (about 200 bytes per message at 64 connections). Requests larger than a
/// block go, as before, to <see cref="ArrayPool{T}.Shared"/> (the pipes do that themselves above <see cref="MaxBufferSize"/>).
/// Safe from any thread: segments are rented by the loop and the application and returned by either.
/// </summary>
internal sealed class PipeBlockPool : MemoryPool<byte>
{
    /// <summary>The size of every block: the pipes' default minimum segment size.</summary>
    public const int BlockSize = 4096;

    /// <summary>At most this many free blocks are kept (16 MiB); a block returned beyond that is left to the GC.</summary>
    public const int MaxRetained = 4096;

    /// <summary>The one pool of the process.</summary>
    public static readonly PipeBlockPool Instance = new();

    private readonly object _lock = new();
    private Block?[] _free = new Block?[64];
    private int _count;

    /// <inheritdoc/>
    public override int MaxBufferSize => BlockSize;

    /// <summary>Free blocks held now (for tests).</summary>
    internal int FreeCount
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    /// <inheritdoc/>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"At most {BlockSize} bytes (MaxBufferSize).");
        }

        Block? block = null;
        lock (_lock)
        {
            if (_count > 0)
            {
                block = _free[--_count];
                _free[_count] = null;
            }
        }

        block ??= new Block(this);
        block.Rented = 1;
        return block;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        // The process-wide pool is never released.
    }

    private void Return(Block block)
    {
        lock (_lock)
        {
            if (_count == _free.Length)
            {
                if (_count >= MaxRetained)
                {
                    return;
                }

                Array.Resize(ref _free, Math.Min(_free.Length * 2, MaxRetained));
            }

            _free[_count++] = block;
        }
    }

    /// <summary>A block and its owner in one object: disposing it returns it to the pool (once).</summary>
    private sealed class Block : IMemoryOwner<byte>
    {
        private readonly PipeBlockPool _pool;
        private readonly byte[] _array = new byte[BlockSize];

        public Block(PipeBlockPool pool) => _pool = pool;

        /// <summary>1 while rented, 0 once returned.</summary>
        public int Rented;

        public Memory<byte> Memory => _array;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref Rented, 0) == 1)
            {
                _pool.Return(this);
            }
        }
    }
}
