using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>The descriptor of an io_uring instance, as <c>io_uring_setup</c> returned it. Releasing the handle closes it.</summary>
internal sealed class IoUringRingHandle : SafeHandle
{
    internal IoUringRingHandle()
        : base(new IntPtr(-1), ownsHandle: true)
    {
    }

    /// <inheritdoc/>
    public override bool IsInvalid => (long)handle < 0;

    /// <summary>The descriptor number. Valid while a lease is held on the handle.</summary>
    internal int FileDescriptor => (int)handle;

    /// <summary>Takes ownership of <paramref name="fd"/>.</summary>
    internal void Attach(int fd) => SetHandle(new IntPtr(fd));

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Interop.Sys.close((int)handle) == 0;
}
