using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>
/// One shared mapping of an io_uring instance (the rings, or the submission entries), made with <c>mmap</c>.
/// Releasing the handle unmaps it; the mapping keeps the ring's memory alive even after its descriptor is closed.
/// </summary>
internal sealed class IoUringMapping : SafeHandle
{
    private nuint _length;

    private IoUringMapping()
        : base(new IntPtr(-1), ownsHandle: true)
    {
    }

    /// <inheritdoc/>
    public override bool IsInvalid => (long)handle == -1 || handle == IntPtr.Zero;

    /// <summary>The mapped length in bytes.</summary>
    internal nuint Length => _length;

    /// <summary>The address of the mapping. Valid while a lease is held on the handle.</summary>
    internal unsafe byte* Address => (byte*)handle;

    /// <summary>
    /// Maps <paramref name="length"/> bytes of <paramref name="ring"/> at <paramref name="offset"/>
    /// (<c>IORING_OFF_SQ_RING</c>, <c>IORING_OFF_SQES</c>) read-write and shared, populated up front.
    /// </summary>
    /// <returns>The mapping, or null with <paramref name="errno"/> set when <c>mmap</c> failed.</returns>
    internal static IoUringMapping? TryMap(IoUringRingHandle ring, nuint length, long offset, out int errno)
    {
        var result = new IoUringMapping();
        nint address = Interop.Sys.mmap(
            0,
            length,
            Interop.IoUring.PROT_READ | Interop.IoUring.PROT_WRITE,
            Interop.IoUring.MAP_SHARED | Interop.IoUring.MAP_POPULATE,
            ring.FileDescriptor,
            offset);
        if (address == -1)
        {
            errno = Interop.Errno.Last();
            result.SetHandleAsInvalid();
            return null;
        }

        result._length = length;
        result.SetHandle(address);
        errno = 0;
        return result;
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Interop.Sys.munmap(handle, _length) == 0;
}
