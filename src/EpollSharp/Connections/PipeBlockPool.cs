using System;
using System.Buffers;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// The pipes' default pool (<see cref="PipeConnectionOptions.MemoryPool"/> left null): blocks of <see cref="BlockSize"/>
/// bytes for the pipes' ordinary segments and of <see cref="LargeBlockSize"/> (a whole default receive buffer) for larger
/// requests and for every segment of the output pipe (so that a reply of up to that size is sent without a gathering copy), kept for reuse when returned (up to <see cref="MaxRetainedBytes"/> of each size), so renting allocates nothing
/// once enough blocks exist. <see cref="ArrayPool{T}.Shared"/>, which the pipes use for <see cref="MemoryPool{T}.Shared"/>,
/// keeps only a few arrays per size and core: a loop serving tens of connections has more segments rented at once than
/// that, and each rent past them allocated a new array (about 200 bytes per 64-byte message at 64 connections, 3 KB per
/// 16 KiB message). Requests above <see cref="MaxBufferSize"/> go, as before, to <see cref="ArrayPool{T}.Shared"/> (the
/// pipes do that themselves). Safe from any thread: segments are rented by the loop and the application and returned by
/// either. Each loop thread keeps its last few returned blocks of each size (<see cref="ThreadCacheBlocks"/>) and rents from
/// them first, without the shared stack's lock (other threads use the shared stack): in an echo on the loop a message's block is returned before the next
/// message rents one, so the hot path of every message takes no lock here.
/// </summary>
internal sealed class PipeBlockPool : MemoryPool<byte>
{
    /// <summary>The size of the ordinary blocks: the pipes' default minimum segment size.</summary>
    public const int BlockSize = 4096;

    /// <summary>The size of the large blocks: the connections' default receive buffer (<see cref="ConnectionOptions.ReceiveBufferSize"/>).</summary>
    public const int LargeBlockSize = 16 * 1024;

    /// <summary>At most this many bytes of free blocks of each size are kept (16 MiB); a block returned beyond that is left to the GC.</summary>
    public const int MaxRetainedBytes = 16 * 1024 * 1024;

    /// <summary>The one pool of the process.</summary>
    public static readonly PipeBlockPool Instance = new();

    /// <summary>Free blocks of each size a thread keeps for itself (at most 4 x (4 + 16) KiB per loop thread that returns blocks).</summary>
    internal const int ThreadCacheBlocks = 4;

    /// <summary>The current thread's free blocks, made at its first return.</summary>
    [ThreadStatic]
    private static ThreadCache? t_cache;

    private readonly Stack _small = new(BlockSize, 0);
    private readonly Stack _large = new(LargeBlockSize, 1);

    /// <inheritdoc/>
    public override int MaxBufferSize => LargeBlockSize;

    /// <summary>Free blocks of <see cref="BlockSize"/> held now, in the shared stack and this thread's cache (for tests).</summary>
    internal int FreeCount => _small.Count + (t_cache?.Count(0) ?? 0);

    /// <summary>Free blocks of <see cref="LargeBlockSize"/> held now, in the shared stack and this thread's cache (for tests).</summary>
    internal int FreeLargeCount => _large.Count + (t_cache?.Count(1) ?? 0);

    /// <inheritdoc/>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > LargeBlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"At most {LargeBlockSize} bytes (MaxBufferSize).");
        }

        Stack stack = minBufferSize <= BlockSize ? _small : _large;
        Block block = t_cache?.Pop(stack.SizeClass) ?? stack.Rent();
        block.Rented = 1;
        return block;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        // The process-wide pool is never released.
    }

    /// <summary>The free blocks of one size.</summary>
    /// <summary>A thread's own free blocks: a few of each size class (0: <see cref="BlockSize"/>, 1: <see cref="LargeBlockSize"/>), last in first out.</summary>
    private sealed class ThreadCache
    {
        private readonly Block?[] _small = new Block?[ThreadCacheBlocks];
        private readonly Block?[] _large = new Block?[ThreadCacheBlocks];
        private int _smallCount;
        private int _largeCount;

        public int Count(int sizeClass) => sizeClass == 0 ? _smallCount : _largeCount;

        public Block? Pop(int sizeClass)
        {
            Block?[] blocks = sizeClass == 0 ? _small : _large;
            ref int count = ref sizeClass == 0 ? ref _smallCount : ref _largeCount;
            if (count == 0)
            {
                return null;
            }

            Block block = blocks[--count]!;
            blocks[count] = null;
            return block;
        }

        public bool TryPush(Block block, int sizeClass)
        {
            Block?[] blocks = sizeClass == 0 ? _small : _large;
            ref int count = ref sizeClass == 0 ? ref _smallCount : ref _largeCount;
            if (count == ThreadCacheBlocks)
            {
                return false;
            }

            blocks[count++] = block;
            return true;
        }
    }

    private sealed class Stack
    {
        private readonly object _lock = new();
        private readonly int _blockSize;
        private readonly int _maxRetained;
        private Block?[] _free = new Block?[64];
        private int _count;

        public Stack(int blockSize, int sizeClass)
        {
            _blockSize = blockSize;
            _maxRetained = MaxRetainedBytes / blockSize;
            SizeClass = sizeClass;
        }

        /// <summary>The index of this size in a <see cref="ThreadCache"/>.</summary>
        public int SizeClass { get; }

        public int Count
        {
            get
            {
                lock (_lock)
                {
                    return _count;
                }
            }
        }

        public Block Rent()
        {
            Block? block = null;
            lock (_lock)
            {
                if (_count > 0)
                {
                    block = _free[--_count];
                    _free[_count] = null;
                }
            }

            return block ?? new Block(this, _blockSize);
        }

        public void Return(Block block)
        {
            // Only a loop thread keeps blocks for itself: with continuations on the thread pool, the application's
            // threads return the loop's input blocks, and blocks parked in the caches of ever more pool threads left
            // the loop's shared stack empty, so the loop allocated new ones (8 bytes per message, measured).
            if (SynchronizationContext.Current is LoopSynchronizationContext && (t_cache ??= new ThreadCache()).TryPush(block, SizeClass))
            {
                return;
            }

            lock (_lock)
            {
                if (_count == _free.Length)
                {
                    if (_count >= _maxRetained)
                    {
                        return;
                    }

                    Array.Resize(ref _free, Math.Min(_free.Length * 2, _maxRetained));
                }

                _free[_count++] = block;
            }
        }
    }

    /// <summary>A block and its owner in one object: disposing it returns it to its stack (once).</summary>
    private sealed class Block : IMemoryOwner<byte>
    {
        private readonly Stack _stack;
        private readonly byte[] _array;

        public Block(Stack stack, int size)
        {
            _stack = stack;
            _array = new byte[size];
        }

        /// <summary>1 while rented, 0 once returned.</summary>
        public int Rented;

        public Memory<byte> Memory => _array;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref Rented, 0) == 1)
            {
                _stack.Return(this);
            }
        }
    }
}
