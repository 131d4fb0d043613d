using System;
using System.Globalization;
using System.Runtime.InteropServices;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// Registered files for the completion path: a stream's receives and sends name an index of a file table registered with
/// the ring (<c>IOSQE_FIXED_FILE</c>) rather than its descriptor, which spares the kernel looking the descriptor up and
/// taking and dropping a reference on its file for every request (atomic operations, since a .NET process has many threads).
/// </summary>
/// <remarks>
/// <para>The table: registered sparse (<c>IORING_REGISTER_FILES2</c> with <c>IORING_RSRC_REGISTER_SPARSE</c>, Linux 5.19)
/// when the completion path is set up, <see cref="FileTableSizeWanted"/> entries (fewer when the descriptor limit is lower:
/// the kernel allows no more entries than <c>RLIMIT_NOFILE</c>). A kernel that refuses it leaves the backend on plain
/// descriptors (<see cref="FixedFilesAvailable"/> says why). The table does not grow: a stream opened while every index is
/// taken uses its descriptor, as without a table.</para>
/// <para>Installing: <see cref="Open"/> takes a free index (a free list on the loop thread) and writes an
/// <c>IORING_OP_FILES_UPDATE</c> of it, which goes to the kernel with the loop's next wait, ahead of the stream's first
/// receive (entries are consumed in order, and an update is carried out as it is consumed). No system call of its own; its
/// completion is skipped on success (<c>IOSQE_CQE_SKIP_SUCCESS</c>), and a failure is counted
/// (<see cref="FileUpdateFailures"/>): the stream's requests then fail with <c>EBADF</c> and it ends with an error.</para>
/// <para>Closing: the table holds its own reference on the file, so closing the descriptor alone would not close the socket
/// (no FIN or reset would reach the peer) while the entry is set. <see cref="Close"/> therefore writes an update that
/// clears the entry (to -1) and enters it at once, with the cancellations, before the caller closes the descriptor. An
/// operation still in the kernel holds the entry's file until it completes, as a request on a descriptor holds its file;
/// its completion is tagged with its channel's slot and generation, never with the index, so it cannot reach a stream that
/// took the index since. The index is taken again only once the kernel consumed the clearing update (the submission head
/// passed it): an update read later would otherwise install the new stream's file under the old stream's requests.
/// Disposing the backend unregisters the table.</para>
/// <para>A ring set up again for another thread (<see cref="MoveToThisThread"/>) gets the table registered with every
/// installed stream's descriptor at once (updates not yet entered into the old ring are not carried over).</para>
/// <para>Accept channels keep their descriptor: a multishot accept looks its file up once, when it is armed.</para>
/// </remarks>
internal sealed unsafe partial class IoUringBackend
{
    /// <summary>The kind of a file table update (an install or a clearing) in the user data.</summary>
    private const ulong KindFiles = 5;

    /// <summary>The table's size when <c>EPOLLSHARP_IO_URING_FIXED_FILES</c> does not say otherwise.</summary>
    internal const int DefaultFileTableSize = 16384;

    /// <summary>The smallest table tried when the descriptor limit refuses larger ones.</summary>
    internal const int MinFileTableSize = 64;

    /// <summary>The largest table the kernel registers (<c>IORING_MAX_FIXED_FILES</c>).</summary>
    internal const int MaxFileTableSize = 1 << 20;

    /// <summary>A -1 that clearing updates point at (read by the kernel when the update is consumed).</summary>
    private static readonly int* s_noFile = AllocateNoFile();

    /// <summary>
    /// How many entries a new backend's file table has: <c>EPOLLSHARP_IO_URING_FIXED_FILES</c> (a number from 2 up to
    /// <see cref="MaxFileTableSize"/>; 0, <c>off</c> or <c>false</c> switches registered files off; 1, <c>on</c> or
    /// <c>true</c> keeps the default), else <see cref="DefaultFileTableSize"/>. Tests set it.
    /// </summary>
    internal static int FileTableSizeWanted { get; set; } = ParseFileTableSize(Environment.GetEnvironmentVariable("EPOLLSHARP_IO_URING_FIXED_FILES"));

    private bool _fixedFiles;
    private string _fixedFilesReason = "the completion path is not set up";
    private int _fileTableSize;

    /// <summary>Per index, the descriptor installed (or being installed): what an install update points the kernel at.</summary>
    private int* _fileCells;

    private int[] _freeFileIndexes = new int[64];
    private int _freeFileIndexCount;

    /// <summary>Indexes handed out at least once (the rest, up to the table's size, are free too).</summary>
    private int _fileIndexesUsed;

    /// <summary>Cleared indexes whose clearing update the kernel may not have consumed yet, in the order written.</summary>
    private RetiringFile[] _retiringFiles = new RetiringFile[16];
    private int _retiringHead;
    private int _retiringCount;

    /// <summary>Streams with an index.</summary>
    private int _filesInstalled;

    private int _fileUpdateFailures;
    private int _lastFileUpdateError;

    /// <summary>Whether streams' operations name registered files; why not otherwise.</summary>
    internal bool FixedFilesAvailable(out string reason)
    {
        reason = _fixedFilesReason;
        return _fixedFiles;
    }

    /// <summary>The registered file table's size (0 without one).</summary>
    internal int FileTableSize => _fileTableSize;

    /// <summary>Streams that hold an index of the table now (tests and diagnostics).</summary>
    internal int FilesInstalled => _filesInstalled;

    /// <summary>Table updates the kernel refused (tests and diagnostics; 0 unless something is wrong).</summary>
    internal int FileUpdateFailures => _fileUpdateFailures;

    /// <summary>The negated errno of the last refused table update (0 when none was).</summary>
    internal int LastFileUpdateError => _lastFileUpdateError;

    /// <summary>Cleared indexes not yet free again (tests and diagnostics).</summary>
    internal int FileIndexesRetiring => _retiringCount - _retiringHead;

    /// <summary>Tests: the ring's descriptor (its <c>/proc/self/fdinfo</c> entry lists the registered files).</summary>
    internal int RingDescriptor => _ring.Handle.FileDescriptor;

    /// <summary>Tests: the index of the open stream on descriptor <paramref name="fd"/>, or -1 (none, or it has no index). On the loop thread.</summary>
    internal int FileIndexOf(int fd)
    {
        lock (_lock)
        {
            for (int slot = 0; slot < _channelsUsed; slot++)
            {
                if (_channels[slot] is CompletionChannel channel && channel is not AcceptChannel && !channel.Closed && channel.Fd == fd)
                {
                    return channel.FileIndex;
                }
            }

            return -1;
        }
    }

    /// <summary>Parses <c>EPOLLSHARP_IO_URING_FIXED_FILES</c>: unset, on or not understood gives the default; off gives 0; a number is clamped.</summary>
    internal static int ParseFileTableSize(string? value)
    {
        switch (ParseSwitch(value))
        {
            case false:
                return 0;
            case true:
                // "1" is the switch's "on", not a table of one entry.
                return DefaultFileTableSize;
        }

        return int.TryParse(value?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            ? Math.Min(n, MaxFileTableSize)
            : DefaultFileTableSize;
    }

    private static int* AllocateNoFile()
    {
        var cell = (int*)Marshal.AllocHGlobal(sizeof(int));
        *cell = -1;
        return cell;
    }

    /// <summary>Registers the sparse file table, once the completion path is set up; otherwise notes why streams keep their descriptors.</summary>
    private void SetUpFixedFiles()
    {
        int wanted = FileTableSizeWanted;
        if (wanted <= 0)
        {
            _fixedFilesReason = "switched off (EPOLLSHARP_IO_URING_FIXED_FILES=0)";
            return;
        }

        if (!_ring.SupportsOps(stackalloc byte[] { Interop.IoUring.IORING_OP_FILES_UPDATE }))
        {
            _fixedFilesReason = "the kernel lacks IORING_OP_FILES_UPDATE";
            return;
        }

        int size = Math.Max(wanted, 1);
        int errno;
        while ((errno = RegisterFileTable(_ring, size, null)) == Interop.Errno.EMFILE && size > MinFileTableSize)
        {
            // More entries than RLIMIT_NOFILE allows.
            size = Math.Max(size / 2, MinFileTableSize);
        }

        if (errno != 0)
        {
            _fixedFilesReason = "io_uring_register(IORING_REGISTER_FILES2, sparse) failed with " + ErrnoNames.NameOf(errno);
            return;
        }

        _fileCells = (int*)Marshal.AllocHGlobal((nint)size * sizeof(int));
        new Span<int>(_fileCells, size).Fill(-1);
        _fileTableSize = size;
        _fixedFiles = true;
        _fixedFilesReason = string.Empty;
    }

    /// <summary>Registers a table of <paramref name="size"/> entries with <paramref name="ring"/>: sparse, or the descriptors at <paramref name="fds"/> (-1 for none). Returns 0 or the errno.</summary>
    private static int RegisterFileTable(IoUringRing ring, int size, int* fds)
    {
        var reg = default(Interop.IoUringRsrcRegister);
        reg.Nr = (uint)size;
        reg.Flags = fds is null ? Interop.IoUring.IORING_RSRC_REGISTER_SPARSE : 0;
        reg.Data = (ulong)fds;
        using SafeHandleLease lease = SafeHandleLease.Acquire(ring.Handle);
        return Interop.IoUring.io_uring_register(ring.Handle.FileDescriptor, Interop.IoUring.IORING_REGISTER_FILES2, &reg, (uint)sizeof(Interop.IoUringRsrcRegister)) < 0
            ? Interop.Errno.Last()
            : 0;
    }

    /// <summary>Gives <paramref name="channel"/> (just opened on descriptor <paramref name="fd"/>) an index, and writes its install. Under the lock.</summary>
    private void InstallFile(CompletionChannel channel, int fd)
    {
        if (!_fixedFiles)
        {
            return;
        }

        int index = TakeFileIndex();
        if (index < 0)
        {
            // Every index is taken: this stream names its descriptor.
            return;
        }

        _fileCells[index] = fd;
        WriteFilesUpdate(index, &_fileCells[index], channel);
        channel.FileIndex = index;
        _filesInstalled++;
    }

    /// <summary>
    /// Writes the update that clears a closing channel's index, and retires the index until the kernel consumed it.
    /// Returns whether it wrote one (the caller enters it at once). Under the lock.
    /// </summary>
    private bool ClearFile(CompletionChannel channel)
    {
        int index = channel.FileIndex;
        if (index < 0)
        {
            return false;
        }

        channel.FileIndex = -1;
        _filesInstalled--;
        WriteFilesUpdate(index, s_noFile, channel);
        if (_retiringCount == _retiringFiles.Length)
        {
            if (_retiringHead > 0)
            {
                Array.Copy(_retiringFiles, _retiringHead, _retiringFiles, 0, _retiringCount - _retiringHead);
                _retiringCount -= _retiringHead;
                _retiringHead = 0;
            }
            else
            {
                Array.Resize(ref _retiringFiles, _retiringFiles.Length * 2);
            }
        }

        _retiringFiles[_retiringCount++] = new RetiringFile(index, _ring.WritePosition);
        return true;
    }

    /// <summary>An <c>IORING_OP_FILES_UPDATE</c> of one entry, whose descriptor the kernel reads at <paramref name="cell"/> when it consumes it.</summary>
    private void WriteFilesUpdate(int index, int* cell, CompletionChannel channel)
    {
        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = Interop.IoUring.IORING_OP_FILES_UPDATE;
        sqe->Flags = Interop.IoUring.IOSQE_CQE_SKIP_SUCCESS;
        sqe->Fd = -1;
        sqe->Off = (ulong)index;
        sqe->Addr = (ulong)cell;
        sqe->Len = 1;
        sqe->UserData = OpUserData(KindFiles, channel);
    }

    /// <summary>A free index: a freed one, else one whose clearing the kernel consumed, else a new one; -1 when the table is full. Under the lock.</summary>
    private int TakeFileIndex()
    {
        if (_freeFileIndexCount == 0)
        {
            ReclaimRetiredFiles();
        }

        if (_freeFileIndexCount > 0)
        {
            return _freeFileIndexes[--_freeFileIndexCount];
        }

        return _fileIndexesUsed < _fileTableSize ? _fileIndexesUsed++ : -1;
    }

    /// <summary>Frees the retired indexes whose clearing update the kernel consumed. Under the lock.</summary>
    private void ReclaimRetiredFiles()
    {
        while (_retiringHead < _retiringCount && _ring.ConsumedUpTo(_retiringFiles[_retiringHead].Position))
        {
            FreeFileIndex(_retiringFiles[_retiringHead++].Index);
        }

        if (_retiringHead == _retiringCount)
        {
            _retiringHead = 0;
            _retiringCount = 0;
        }
    }

    private void FreeFileIndex(int index)
    {
        if (_freeFileIndexCount == _freeFileIndexes.Length)
        {
            Array.Resize(ref _freeFileIndexes, _freeFileIndexes.Length * 2);
        }

        _freeFileIndexes[_freeFileIndexCount++] = index;
    }

    /// <summary>Writes the operand of an operation on <paramref name="channel"/>'s stream: its index (with <c>IOSQE_FIXED_FILE</c>), or its descriptor.</summary>
    private static void SetTarget(Interop.IoUringSqe* sqe, CompletionChannel channel)
    {
        if (channel.FileIndex >= 0)
        {
            sqe->Fd = channel.FileIndex;
            sqe->Flags |= Interop.IoUring.IOSQE_FIXED_FILE;
        }
        else
        {
            sqe->Fd = channel.Fd;
        }
    }

    /// <summary>A refused table update's completion (a successful one posts none). Under the lock, while reaping.</summary>
    private void NoteFileUpdate(int res)
    {
        if (res < 0)
        {
            _fileUpdateFailures++;
            _lastFileUpdateError = res;
        }
    }

    /// <summary>
    /// After the ring was replaced (<see cref="MoveToThisThread"/>): registers the table with the new ring, holding every
    /// installed stream's descriptor; the retired indexes are free (the new ring never had them). Under the lock.
    /// </summary>
    private void MoveFileTable(IoUringRing fresh)
    {
        if (!_fixedFiles)
        {
            return;
        }

        for (int i = _retiringHead; i < _retiringCount; i++)
        {
            int index = _retiringFiles[i].Index;
            _fileCells[index] = -1;
            FreeFileIndex(index);
        }

        _retiringHead = 0;
        _retiringCount = 0;
        for (int i = 0; i < _freeFileIndexCount; i++)
        {
            _fileCells[_freeFileIndexes[i]] = -1;
        }

        int errno = RegisterFileTable(fresh, _fileTableSize, _fileCells);
        if (errno != 0)
        {
            throw ErrnoNames.Create("io_uring_register(IORING_REGISTER_FILES2)", errno);
        }
    }

    /// <summary>On dispose, on the issuer (or before the ring was enabled): unregisters the table, letting go of every file it holds.</summary>
    private void UnregisterFileTable(bool registered)
    {
        if (!_fixedFiles)
        {
            return;
        }

        _fixedFiles = false;
        if (registered)
        {
            Interop.IoUring.io_uring_register(_ring.Handle.FileDescriptor, Interop.IoUring.IORING_UNREGISTER_FILES, null, 0);
        }
    }

    /// <summary>After the ring was closed: frees the descriptors' cells (no update can be consumed any more).</summary>
    private void FreeFileCells()
    {
        if (_fileCells is not null)
        {
            Marshal.FreeHGlobal((nint)_fileCells);
            _fileCells = null;
        }
    }

    /// <summary>A cleared index, and the submission position after its clearing update.</summary>
    private readonly struct RetiringFile
    {
        public RetiringFile(int index, uint position)
        {
            Index = index;
            Position = position;
        }

        public int Index { get; }

        public uint Position { get; }
    }
}
