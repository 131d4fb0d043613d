using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Native;

/// <summary>
/// A reference held on a <see cref="SafeHandle"/> for the length of one native call, so that its descriptor number
/// cannot be closed (and handed to another file) while the call uses it. The one place that pairs
/// <see cref="SafeHandle.DangerousAddRef(ref bool)"/> with <see cref="SafeHandle.DangerousRelease"/>:
/// <code>
/// using SafeHandleLease lease = SafeHandleLease.Acquire(handle);
/// int fd = (int)handle.DangerousGetHandle();
/// // ... the native call ...
/// </code>
/// </summary>
/// <remarks>
/// <para>A <see langword="ref"/> struct: it lives on the stack only (no allocation, no boxing, cannot be copied into a
/// field and released twice), and <see langword="using"/> releases it when the scope ends, on every path.</para>
/// <para><see cref="Acquire"/> throws <see cref="ObjectDisposedException"/> when the handle is already closed, as
/// <see cref="SafeHandle.DangerousAddRef(ref bool)"/> does; callers that translate or swallow it catch it around the
/// <see langword="using"/> scope, exactly as they did around the hand-written pair.</para>
/// </remarks>
internal readonly ref struct SafeHandleLease
{
    private readonly SafeHandle? _handle;

    private SafeHandleLease(SafeHandle handle) => _handle = handle;

    /// <summary>Takes a reference on <paramref name="handle"/>; dispose the lease to give it back.</summary>
    /// <param name="handle">The handle to keep open.</param>
    /// <returns>The lease.</returns>
    /// <exception cref="ObjectDisposedException">The handle was closed.</exception>
    public static SafeHandleLease Acquire(SafeHandle handle)
    {
        bool added = false;
        handle.DangerousAddRef(ref added);

        // DangerousAddRef either throws or sets added; the check keeps a release from ever outnumbering the references.
        return added ? new SafeHandleLease(handle) : default;
    }

    /// <summary>Gives the reference back (once; a default lease holds none).</summary>
    public void Dispose() => _handle?.DangerousRelease();
}
