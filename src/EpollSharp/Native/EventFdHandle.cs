using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Native;

/// <summary>
/// A Linux <c>eventfd</c>: a 64-bit counter that a thread can add to and another can wait on with
/// epoll, used to wake a waiting loop. Always close-on-exec and non-blocking. Releasing the handle
/// closes the descriptor.
/// </summary>
/// <remarks>Every member may be called from any thread.</remarks>
public sealed class EventFdHandle : SafeHandle
{
    private EventFdHandle()
        : base(new IntPtr(-1), ownsHandle: true)
    {
    }

    /// <inheritdoc/>
    public override bool IsInvalid => (long)handle < 0;

    /// <summary>The descriptor number, to register with <see cref="EpollHandle.Add(int, EpollEvents, ulong)"/>.</summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public int FileDescriptor
    {
        get
        {
            if (IsClosed)
            {
                throw new ObjectDisposedException(nameof(EventFdHandle));
            }

            return (int)handle;
        }
    }

    /// <summary>Creates an eventfd (<c>eventfd(initialValue, EFD_CLOEXEC | EFD_NONBLOCK [| EFD_SEMAPHORE])</c>).</summary>
    /// <param name="initialValue">The counter's starting value.</param>
    /// <param name="semaphore">With <see langword="true"/>, each read takes 1 from the counter instead of all of it.</param>
    /// <returns>The new handle.</returns>
    /// <exception cref="PlatformNotSupportedException">The process does not run on Linux.</exception>
    /// <exception cref="NativeCallException">The kernel refused (EMFILE, ENFILE, ENOMEM).</exception>
    public static EventFdHandle Create(uint initialValue = 0, bool semaphore = false)
    {
        Platform.ThrowIfNotLinux("eventfd");
        int flags = Interop.Sys.EFD_CLOEXEC | Interop.Sys.EFD_NONBLOCK | (semaphore ? Interop.Sys.EFD_SEMAPHORE : 0);
        var result = new EventFdHandle();
        int fd = Interop.Sys.eventfd(initialValue, flags);
        if (fd < 0)
        {
            int errno = Interop.Errno.Last();
            result.SetHandleAsInvalid();
            throw ErrnoNames.Create("eventfd", errno);
        }

        result.SetHandle(new IntPtr(fd));
        return result;
    }

    /// <summary>Adds <paramref name="value"/> to the counter, making the descriptor readable.</summary>
    /// <param name="value">The amount to add; 1 to 0xFFFFFFFFFFFFFFFE.</param>
    /// <returns><see langword="false"/> when the counter would overflow (EAGAIN): the descriptor is readable already, so a wake-up is not lost.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="value"/> is 0 or <see cref="ulong.MaxValue"/>.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    /// <exception cref="NativeCallException">The write failed for another reason.</exception>
    public unsafe bool Signal(ulong value = 1)
    {
        if (value == 0 || value == ulong.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "The value must be between 1 and 0xFFFFFFFFFFFFFFFE.");
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(this);
        while (true)
        {
            nint n = Interop.Sys.write((int)handle, &value, sizeof(ulong));
            if (n == sizeof(ulong))
            {
                return true;
            }

            int errno = Interop.Errno.Last();
            if (errno == Interop.Errno.EINTR)
            {
                continue;
            }

            if (errno == Interop.Errno.EAGAIN)
            {
                return false;
            }

            throw ErrnoNames.Create("write(eventfd)", errno);
        }
    }

    /// <summary>Reads and resets the counter (or takes 1 in semaphore mode).</summary>
    /// <param name="value">The value read; 0 when the counter was 0.</param>
    /// <returns><see langword="false"/> when the counter was 0 (EAGAIN).</returns>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    /// <exception cref="NativeCallException">The read failed for another reason.</exception>
    public unsafe bool TryRead(out ulong value)
    {
        using SafeHandleLease lease = SafeHandleLease.Acquire(this);
        ulong v = 0;
        while (true)
        {
            nint n = Interop.Sys.read((int)handle, &v, sizeof(ulong));
            if (n == sizeof(ulong))
            {
                value = v;
                return true;
            }

            int errno = Interop.Errno.Last();
            if (errno == Interop.Errno.EINTR)
            {
                continue;
            }

            value = 0;
            if (errno == Interop.Errno.EAGAIN)
            {
                return false;
            }

            throw ErrnoNames.Create("read(eventfd)", errno);
        }
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Interop.Sys.close((int)handle) == 0;
}
