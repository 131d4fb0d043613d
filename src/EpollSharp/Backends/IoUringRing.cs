using System;
using System.Globalization;
using System.Threading;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// One io_uring instance: its descriptor, its two mappings (the rings, shared by the submission and completion queues
/// since <c>IORING_FEAT_SINGLE_MMAP</c>, and the submission entries), and the ring indexes. It knows nothing of
/// readiness: <see cref="IoUringBackend"/> decides what to submit.
/// </summary>
/// <remarks>
/// <para>Not thread-safe by itself: the caller serializes the submission side (<see cref="TryGetSqe"/>,
/// <see cref="Publish"/>) with a lock, and reads completions from one thread at a time. <see cref="Enter"/> may be
/// called from any thread, also while another thread waits in it.</para>
/// <para>Memory ordering follows the kernel's documentation of the rings: the completion tail and the submission head
/// (written by the kernel) are read with acquire semantics (<c>Volatile.Read</c>); the submission tail
/// and the completion head (written here) are stored with release semantics (<c>Volatile.Write</c>),
/// after the entries they publish or free.</para>
/// </remarks>
internal sealed unsafe class IoUringRing : IDisposable
{
    /// <summary>The features this binding needs (Linux 5.13 and later have them all).</summary>
    internal const uint RequiredFeatures =
        Interop.IoUring.IORING_FEAT_SINGLE_MMAP | Interop.IoUring.IORING_FEAT_NODROP | Interop.IoUring.IORING_FEAT_EXT_ARG | Interop.IoUring.IORING_FEAT_RSRC_TAGS;

    private readonly IoUringRingHandle _fd;
    private readonly IoUringMapping _rings;
    private readonly IoUringMapping _sqeMapping;

    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint* _sqArray;
    private readonly uint* _sqFlags;
    private readonly uint _sqMask;
    private readonly uint _sqEntries;
    private readonly Interop.IoUringSqe* _sqes;

    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly Interop.IoUringCqe* _cqes;

    /// <summary>The next submission tail, published by <see cref="Publish"/>.</summary>
    private uint _sqLocalTail;

    private IoUringRing(IoUringRingHandle fd, IoUringMapping rings, IoUringMapping sqes, in Interop.IoUringParams p)
    {
        _fd = fd;
        _rings = rings;
        _sqeMapping = sqes;
        byte* r = rings.Address;
        _sqHead = (uint*)(r + p.SqOff.Head);
        _sqTail = (uint*)(r + p.SqOff.Tail);
        _sqArray = (uint*)(r + p.SqOff.Array);
        _sqFlags = (uint*)(r + p.SqOff.Flags);
        _sqMask = *(uint*)(r + p.SqOff.RingMask);
        _sqEntries = *(uint*)(r + p.SqOff.RingEntries);
        _sqes = (Interop.IoUringSqe*)sqes.Address;
        _cqHead = (uint*)(r + p.CqOff.Head);
        _cqTail = (uint*)(r + p.CqOff.Tail);
        _cqMask = *(uint*)(r + p.CqOff.RingMask);
        _cqes = (Interop.IoUringCqe*)(r + p.CqOff.Cqes);
        _sqLocalTail = *_sqTail;
        SqEntries = p.SqEntries;
        CqEntries = p.CqEntries;
        Features = p.Features;
    }

    /// <summary>The submission queue's size.</summary>
    internal uint SqEntries { get; }

    /// <summary>The completion queue's size.</summary>
    internal uint CqEntries { get; }

    /// <summary>The kernel's <c>IORING_FEAT_*</c> bits.</summary>
    internal uint Features { get; }

    /// <summary>The ring descriptor (to lease around <see cref="Enter"/>).</summary>
    internal IoUringRingHandle Handle => _fd;

    /// <summary>
    /// Creates a ring with <paramref name="sqEntries"/> submission and <paramref name="cqEntries"/> completion entries
    /// (clamped by the kernel), with <paramref name="extraSetupFlags"/> added to the setup flags.
    /// </summary>
    /// <param name="sqEntries">The submission queue size wanted.</param>
    /// <param name="cqEntries">The completion queue size wanted.</param>
    /// <param name="extraSetupFlags">More <c>IORING_SETUP_*</c> flags (the tests pass an invalid one to make setup fail).</param>
    /// <param name="ring">The ring, when it could be created and has every required feature.</param>
    /// <param name="reason">Why not, otherwise: the failed call with its errno, or the missing features.</param>
    /// <param name="errno">The errno of the failed call; 0 when a call did not fail.</param>
    internal static bool TryCreate(uint sqEntries, uint cqEntries, uint extraSetupFlags, out IoUringRing? ring, out string reason, out int errno)
    {
        ring = null;
        if (!Platform.IsLinux)
        {
            reason = "io_uring needs Linux.";
            errno = 0;
            return false;
        }

        var p = default(Interop.IoUringParams);
        p.Flags = Interop.IoUring.IORING_SETUP_CQSIZE | Interop.IoUring.IORING_SETUP_CLAMP | extraSetupFlags;
        p.CqEntries = cqEntries;
        int fd = Interop.IoUring.io_uring_setup(sqEntries, &p);
        if (fd < 0)
        {
            errno = Interop.Errno.Last();
            reason = SetupFailure(errno);
            return false;
        }

        var handle = new IoUringRingHandle();
        handle.Attach(fd);
        if ((p.Features & RequiredFeatures) != RequiredFeatures)
        {
            handle.Dispose();
            errno = 0;
            reason = string.Format(
                CultureInfo.InvariantCulture,
                "io_uring lacks features this backend needs (single mapping, no-drop completions, extended wait arguments, resource tags: Linux 5.13 or later); the kernel offers 0x{0:x}, needed 0x{1:x}.",
                p.Features,
                RequiredFeatures);
            return false;
        }

        ulong sqRingLength = p.SqOff.Array + ((ulong)p.SqEntries * sizeof(uint));
        ulong cqRingLength = p.CqOff.Cqes + ((ulong)p.CqEntries * (ulong)sizeof(Interop.IoUringCqe));
        nuint ringsLength = (nuint)Math.Max(sqRingLength, cqRingLength);
        IoUringMapping? rings = IoUringMapping.TryMap(handle, ringsLength, Interop.IoUring.IORING_OFF_SQ_RING, out errno);
        if (rings is null)
        {
            handle.Dispose();
            reason = "mmap of the io_uring rings failed with " + ErrnoNames.NameOf(errno) + ".";
            return false;
        }

        IoUringMapping? sqes = IoUringMapping.TryMap(handle, (nuint)(p.SqEntries * (uint)sizeof(Interop.IoUringSqe)), Interop.IoUring.IORING_OFF_SQES, out errno);
        if (sqes is null)
        {
            rings.Dispose();
            handle.Dispose();
            reason = "mmap of the io_uring submission entries failed with " + ErrnoNames.NameOf(errno) + ".";
            return false;
        }

        if (!OpsSupported(fd, out reason))
        {
            sqes.Dispose();
            rings.Dispose();
            handle.Dispose();
            errno = 0;
            return false;
        }

        ring = new IoUringRing(handle, rings, sqes, p);
        reason = string.Empty;
        errno = 0;
        return true;
    }

    /// <summary>The reason text for a failed <c>io_uring_setup</c>.</summary>
    internal static string SetupFailure(int errno) => errno switch
    {
        Interop.Errno.ENOSYS => "io_uring_setup failed with ENOSYS: the kernel has no io_uring (older than Linux 5.1, or built without CONFIG_IO_URING), or a seccomp filter hides it.",
        Interop.Errno.EPERM => "io_uring_setup failed with EPERM: io_uring is disabled for this process (sysctl kernel.io_uring_disabled, or a seccomp filter).",
        Interop.Errno.EACCES => "io_uring_setup failed with EACCES: io_uring is restricted to another group (sysctl kernel.io_uring_group) or refused by a security module.",
        Interop.Errno.EINVAL => "io_uring_setup failed with EINVAL: the kernel does not accept the setup flags (too old for this backend).",
        _ => "io_uring_setup failed with " + ErrnoNames.NameOf(errno) + ".",
    };

    private static bool OpsSupported(int fd, out string reason)
    {
        const int count = 64;
        byte* buffer = stackalloc byte[sizeof(Interop.IoUringProbeHeader) + (count * sizeof(Interop.IoUringProbeOp))];
        new Span<byte>(buffer, sizeof(Interop.IoUringProbeHeader) + (count * sizeof(Interop.IoUringProbeOp))).Clear();
        if (Interop.IoUring.io_uring_register(fd, Interop.IoUring.IORING_REGISTER_PROBE, buffer, count) < 0)
        {
            reason = "io_uring_register(IORING_REGISTER_PROBE) failed with " + ErrnoNames.NameOf(Interop.Errno.Last()) + ".";
            return false;
        }

        var header = (Interop.IoUringProbeHeader*)buffer;
        var ops = (Interop.IoUringProbeOp*)(buffer + sizeof(Interop.IoUringProbeHeader));
        foreach (byte op in stackalloc byte[] { Interop.IoUring.IORING_OP_NOP, Interop.IoUring.IORING_OP_POLL_ADD, Interop.IoUring.IORING_OP_POLL_REMOVE, Interop.IoUring.IORING_OP_ASYNC_CANCEL })
        {
            if (op >= header->OpsLen || (ops[op].Flags & Interop.IoUring.IO_URING_OP_SUPPORTED) == 0)
            {
                reason = "io_uring does not support opcode " + op.ToString(CultureInfo.InvariantCulture) + " (NOP, POLL_ADD, POLL_REMOVE and ASYNC_CANCEL are needed).";
                return false;
            }
        }

        reason = string.Empty;
        return true;
    }

    /// <summary>Whether the kernel supports every opcode in <paramref name="ops"/> (<c>IORING_REGISTER_PROBE</c>).</summary>
    internal bool SupportsOps(ReadOnlySpan<byte> ops)
    {
        const int count = 64;
        byte* buffer = stackalloc byte[sizeof(Interop.IoUringProbeHeader) + (count * sizeof(Interop.IoUringProbeOp))];
        new Span<byte>(buffer, sizeof(Interop.IoUringProbeHeader) + (count * sizeof(Interop.IoUringProbeOp))).Clear();
        if (Interop.IoUring.io_uring_register(_fd.FileDescriptor, Interop.IoUring.IORING_REGISTER_PROBE, buffer, count) < 0)
        {
            return false;
        }

        var header = (Interop.IoUringProbeHeader*)buffer;
        var probed = (Interop.IoUringProbeOp*)(buffer + sizeof(Interop.IoUringProbeHeader));
        foreach (byte op in ops)
        {
            if (op >= header->OpsLen || (probed[op].Flags & Interop.IoUring.IO_URING_OP_SUPPORTED) == 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Where the next entry will be written: an entry written now is consumed once <see cref="ConsumedUpTo"/> passed this value. Under the submission lock.</summary>
    internal uint WritePosition => _sqLocalTail;

    /// <summary>
    /// Whether the kernel consumed (took in, and issued or failed) every entry written before <paramref name="position"/>,
    /// a <see cref="WritePosition"/> taken after writing them (acquire load of the submission head).
    /// </summary>
    internal bool ConsumedUpTo(uint position) => (int)(Volatile.Read(ref *_sqHead) - position) >= 0;

    /// <summary>The number of entries written but not yet consumed by the kernel. Under the submission lock.</summary>
    internal uint Unsubmitted => _sqLocalTail - Volatile.Read(ref *_sqHead);

    /// <summary>
    /// A cleared submission entry at the local tail, or null when the submission queue is full (submit, then retry).
    /// Under the submission lock.
    /// </summary>
    internal Interop.IoUringSqe* TryGetSqe()
    {
        if (_sqLocalTail - Volatile.Read(ref *_sqHead) >= _sqEntries)
        {
            return null;
        }

        uint index = _sqLocalTail & _sqMask;
        Interop.IoUringSqe* sqe = &_sqes[index];
        *sqe = default;
        _sqArray[index] = index;
        _sqLocalTail++;
        return sqe;
    }

    /// <summary>Makes the entries written so far visible to the kernel (release store of the tail). Under the submission lock.</summary>
    internal void Publish() => Volatile.Write(ref *_sqTail, _sqLocalTail);

    /// <summary>
    /// <c>io_uring_enter</c>; returns the number of entries submitted, or -1 with <paramref name="errno"/> set.
    /// <paramref name="arg"/> is an <see cref="Interop.IoUringGeteventsArg"/> when <paramref name="flags"/> has
    /// <c>IORING_ENTER_EXT_ARG</c>. The caller holds a lease on <see cref="Handle"/>.
    /// </summary>
    internal int Enter(uint toSubmit, uint minComplete, uint flags, Interop.IoUringGeteventsArg* arg, out int errno)
    {
        int rc = Interop.IoUring.io_uring_enter(
            _fd.FileDescriptor,
            toSubmit,
            minComplete,
            flags,
            arg,
            arg is null ? 0 : (nuint)sizeof(Interop.IoUringGeteventsArg));
        errno = rc < 0 ? Interop.Errno.Last() : 0;
        return rc;
    }

    /// <summary>Whether a completion is waiting (acquire load of the completion tail).</summary>
    internal bool HasCompletions => Volatile.Read(ref *_cqTail) != *_cqHead;

    /// <summary>Whether completions overflowed the ring and wait in the kernel until an <c>IORING_ENTER_GETEVENTS</c> moves them in.</summary>
    internal bool CqOverflowed => (Volatile.Read(ref *_sqFlags) & Interop.IoUring.IORING_SQ_CQ_OVERFLOW) != 0;

    /// <summary>The completion head, to start a reaping pass from. By the one reading thread.</summary>
    internal uint CqHead => *_cqHead;

    /// <summary>The completion tail (acquire load). By the one reading thread.</summary>
    internal uint CqTail => Volatile.Read(ref *_cqTail);

    /// <summary>The completion at <paramref name="index"/> (masked here). By the one reading thread.</summary>
    internal ref Interop.IoUringCqe Cqe(uint index) => ref _cqes[index & _cqMask];

    /// <summary>Frees the completions before <paramref name="head"/> for the kernel (release store of the head).</summary>
    internal void AdvanceCq(uint head) => Volatile.Write(ref *_cqHead, head);

    /// <summary>
    /// Enables a ring set up with <c>IORING_SETUP_R_DISABLED</c> (<c>IORING_REGISTER_ENABLE_RINGS</c>); with
    /// <c>IORING_SETUP_SINGLE_ISSUER</c>, the calling thread becomes the only one that may submit to it and wait on it.
    /// Returns 0, or the errno.
    /// </summary>
    internal int Enable()
    {
        using SafeHandleLease lease = SafeHandleLease.Acquire(_fd);
        return Interop.IoUring.io_uring_register(_fd.FileDescriptor, Interop.IoUring.IORING_REGISTER_ENABLE_RINGS, null, 0) < 0 ? Interop.Errno.Last() : 0;
    }

    /// <summary>The <paramref name="n"/>th submission entry written but not consumed by the kernel (n &lt; <see cref="Unsubmitted"/>). Under the submission lock.</summary>
    internal Interop.IoUringSqe* UnsubmittedSqe(uint n) => &_sqes[(Volatile.Read(ref *_sqHead) + n) & _sqMask];

    /// <summary>Unmaps the rings and closes the descriptor.</summary>
    public void Dispose()
    {
        _sqeMapping.Dispose();
        _rings.Dispose();
        _fd.Dispose();
    }
}
