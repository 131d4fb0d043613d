using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;

namespace EpollSharp.Native;

/// <summary>
/// An epoll instance: a thin, exact binding to <c>epoll_create1</c>, <c>epoll_ctl</c> and
/// <c>epoll_wait</c>. Releasing the handle closes the epoll descriptor.
/// </summary>
/// <remarks>
/// <para>The descriptor is always created with <c>EPOLL_CLOEXEC</c>. Descriptor 0 is valid: the handle
/// is invalid only when its value is negative.</para>
/// <para>epoll tracks the open file description, not the descriptor number: delete a descriptor before
/// closing it. A descriptor that was duplicated (<c>dup</c>, or inherited by a child) keeps the
/// registration alive after the original number is closed.</para>
/// <para>Every member may be called from any thread, also while another thread waits. The throwing
/// members raise <see cref="NativeCallException"/> carrying the errno; the <c>Try</c> members return
/// the errno instead, for hot paths. A disposed handle raises <see cref="ObjectDisposedException"/>.</para>
/// </remarks>
public sealed class EpollHandle : SafeHandle
{
    /// <summary>The value of <see cref="Timeout.Infinite"/>: wait without a time limit.</summary>
    public const int InfiniteTimeout = -1;

    private EpollHandle()
        : base(new IntPtr(-1), ownsHandle: true)
    {
    }

    /// <summary>Whether epoll is available in this process (Linux only).</summary>
    public static bool IsSupported => Platform.IsLinux;

    /// <inheritdoc/>
    public override bool IsInvalid => (long)handle < 0;

    /// <summary>The epoll descriptor number.</summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public int FileDescriptor
    {
        get
        {
            ThrowIfClosed();
            return (int)handle;
        }
    }

    /// <summary>Creates an epoll instance (<c>epoll_create1(EPOLL_CLOEXEC)</c>).</summary>
    /// <returns>The new handle.</returns>
    /// <exception cref="PlatformNotSupportedException">The process does not run on Linux.</exception>
    /// <exception cref="NativeCallException">The kernel refused (EMFILE, ENFILE, ENOMEM).</exception>
    public static EpollHandle Create()
    {
        Platform.ThrowIfNotLinux("epoll");
        var result = new EpollHandle();
        int fd = Interop.Sys.epoll_create1(Interop.Sys.EPOLL_CLOEXEC);
        if (fd < 0)
        {
            int errno = Interop.Errno.Last();
            result.SetHandleAsInvalid();
            throw ErrnoNames.Create("epoll_create1(EPOLL_CLOEXEC)", errno);
        }

        result.SetHandle(new IntPtr(fd));
        return result;
    }

    /// <summary>Registers <paramref name="fd"/> (<c>EPOLL_CTL_ADD</c>).</summary>
    /// <param name="fd">The descriptor to watch; not negative.</param>
    /// <param name="events">The events of interest and mode flags (<see cref="EpollEvents.EdgeTriggered"/>, <see cref="EpollEvents.OneShot"/>, ...).</param>
    /// <param name="data">User data returned with every event of this descriptor.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="NativeCallException">The kernel refused: EEXIST (already added), EPERM (a regular file), EBADF, ENOSPC, ENOMEM, ELOOP, EINVAL.</exception>
    internal void Add(int fd, EpollEvents events, ulong data) => Control(Interop.Sys.EPOLL_CTL_ADD, fd, events, data);

    /// <summary>Changes the events and data of a registered <paramref name="fd"/> (<c>EPOLL_CTL_MOD</c>). Also re-arms a one-shot registration.</summary>
    /// <param name="fd">The registered descriptor; not negative.</param>
    /// <param name="events">The new events of interest and mode flags.</param>
    /// <param name="data">The new user data.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="NativeCallException">The kernel refused: ENOENT (not added), EBADF, EINVAL, ENOMEM.</exception>
    internal void Modify(int fd, EpollEvents events, ulong data) => Control(Interop.Sys.EPOLL_CTL_MOD, fd, events, data);

    /// <summary>Removes <paramref name="fd"/> (<c>EPOLL_CTL_DEL</c>). Call it before closing the descriptor.</summary>
    /// <param name="fd">The registered descriptor; not negative.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="NativeCallException">The kernel refused: ENOENT (not added), EBADF.</exception>
    internal void Delete(int fd) => Control(Interop.Sys.EPOLL_CTL_DEL, fd, EpollEvents.None, 0);

    /// <summary>
    /// Registers the descriptor that <paramref name="fd"/> holds, such as <c>Socket.SafeHandle</c>. The handle is referenced
    /// for the call, so a descriptor closed meanwhile is never hit by its number (which may already belong to another
    /// file). A bare descriptor from elsewhere can be wrapped in <c>new SafeFileHandle((IntPtr)fd, ownsHandle: false)</c>.
    /// </summary>
    /// <param name="fd">A handle whose value is a Unix descriptor.</param>
    /// <param name="events">The events of interest and mode flags.</param>
    /// <param name="data">User data returned with every event of this descriptor.</param>
    /// <exception cref="ArgumentNullException"><paramref name="fd"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="fd"/> is invalid.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="fd"/> or this handle was disposed.</exception>
    /// <exception cref="NativeCallException">The kernel refused, as for <see cref="Add(int, EpollEvents, ulong)"/>.</exception>
    public void Add(SafeHandle fd, EpollEvents events, ulong data) => Control(Interop.Sys.EPOLL_CTL_ADD, fd, events, data);

    /// <summary>Changes the events and data of the descriptor that <paramref name="fd"/> holds.</summary>
    /// <param name="fd">A handle whose value is a registered Unix descriptor.</param>
    /// <param name="events">The new events of interest and mode flags.</param>
    /// <param name="data">The new user data.</param>
    /// <exception cref="ArgumentNullException"><paramref name="fd"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="fd"/> is invalid.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="fd"/> or this handle was disposed.</exception>
    /// <exception cref="NativeCallException">The kernel refused, as for <see cref="Modify(int, EpollEvents, ulong)"/>.</exception>
    public void Modify(SafeHandle fd, EpollEvents events, ulong data) => Control(Interop.Sys.EPOLL_CTL_MOD, fd, events, data);

    /// <summary>Removes the descriptor that <paramref name="fd"/> holds.</summary>
    /// <param name="fd">A handle whose value is a registered Unix descriptor.</param>
    /// <exception cref="ArgumentNullException"><paramref name="fd"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="fd"/> is invalid.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="fd"/> or this handle was disposed.</exception>
    /// <exception cref="NativeCallException">The kernel refused, as for <see cref="Delete(int)"/>.</exception>
    public void Delete(SafeHandle fd) => Control(Interop.Sys.EPOLL_CTL_DEL, fd, EpollEvents.None, 0);

    /// <summary>Non-throwing <c>EPOLL_CTL_ADD</c>.</summary>
    /// <param name="fd">The descriptor to watch; not negative.</param>
    /// <param name="events">The events of interest and mode flags.</param>
    /// <param name="data">User data.</param>
    /// <param name="errno">0 on success, else the errno the kernel set.</param>
    /// <returns><see langword="true"/> on success.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    internal bool TryAdd(int fd, EpollEvents events, ulong data, out int errno) => TryControl(Interop.Sys.EPOLL_CTL_ADD, fd, events, data, out errno);

    /// <summary>Non-throwing <c>EPOLL_CTL_MOD</c>.</summary>
    /// <param name="fd">The registered descriptor; not negative.</param>
    /// <param name="events">The new events of interest and mode flags.</param>
    /// <param name="data">The new user data.</param>
    /// <param name="errno">0 on success, else the errno the kernel set.</param>
    /// <returns><see langword="true"/> on success.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    internal bool TryModify(int fd, EpollEvents events, ulong data, out int errno) => TryControl(Interop.Sys.EPOLL_CTL_MOD, fd, events, data, out errno);

    /// <summary>Non-throwing <c>EPOLL_CTL_DEL</c>.</summary>
    /// <param name="fd">The registered descriptor; not negative.</param>
    /// <param name="errno">0 on success, else the errno the kernel set.</param>
    /// <returns><see langword="true"/> on success.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fd"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    internal bool TryDelete(int fd, out int errno) => TryControl(Interop.Sys.EPOLL_CTL_DEL, fd, EpollEvents.None, 0, out errno);

    /// <summary>
    /// Waits for events (<c>epoll_wait</c>) and writes them to the start of <paramref name="events"/>.
    /// An interrupted wait (EINTR) is retried with the time that remains. Allocates nothing.
    /// </summary>
    /// <param name="events">Where to write the events; its length is the most that one call returns.</param>
    /// <param name="timeoutMilliseconds"><see cref="InfiniteTimeout"/> (-1) to wait without limit, 0 to poll, or a positive number of milliseconds.</param>
    /// <returns>The number of events written; 0 when the timeout expired.</returns>
    /// <exception cref="ArgumentException"><paramref name="events"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeoutMilliseconds"/> is less than -1.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    /// <exception cref="NativeCallException">The kernel refused (EBADF, EINVAL, EFAULT).</exception>
    public int Wait(Span<EpollEvent> events, int timeoutMilliseconds)
    {
        if (!TryWait(events, timeoutMilliseconds, out int count, out int errno))
        {
            throw ErrnoNames.Create("epoll_wait", errno);
        }

        return count;
    }

    /// <summary>
    /// Waits for events with a <see cref="TimeSpan"/> timeout, rounded up to the next whole millisecond
    /// (a 0.3 ms timeout waits 1 ms, never 0), or <see cref="Timeout.InfiniteTimeSpan"/>.
    /// </summary>
    /// <param name="events">Where to write the events.</param>
    /// <param name="timeout">The longest time to wait.</param>
    /// <returns>The number of events written; 0 when the timeout expired.</returns>
    /// <exception cref="ArgumentException"><paramref name="events"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than <see cref="int.MaxValue"/> milliseconds.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    /// <exception cref="NativeCallException">The kernel refused.</exception>
    public int Wait(Span<EpollEvent> events, TimeSpan timeout) => Wait(events, Timeouts.ToMilliseconds(timeout, nameof(timeout)));

    /// <summary>Non-throwing <see cref="Wait(Span{EpollEvent}, int)"/>: EINTR is retried; any other error is returned.</summary>
    /// <param name="events">Where to write the events.</param>
    /// <param name="timeoutMilliseconds">-1, 0 or a positive number of milliseconds.</param>
    /// <param name="count">The number of events written.</param>
    /// <param name="errno">0 on success, else the errno the kernel set.</param>
    /// <returns><see langword="true"/> on success.</returns>
    /// <exception cref="ArgumentException"><paramref name="events"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeoutMilliseconds"/> is less than -1.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    internal unsafe bool TryWait(Span<EpollEvent> events, int timeoutMilliseconds, out int count, out int errno)
    {
        if (events.IsEmpty)
        {
            throw new ArgumentException("The event buffer must hold at least one event.", nameof(events));
        }

        if (timeoutMilliseconds < -1)
        {
            throw new ArgumentOutOfRangeException(nameof(timeoutMilliseconds), timeoutMilliseconds, "The timeout must be -1 (infinite), 0 or positive.");
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(this);
        int epfd = (int)handle;
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMilliseconds;
        fixed (EpollEvent* buffer = events)
        {
            while (true)
            {
                int n = Interop.Sys.epoll_wait(epfd, buffer, events.Length, remaining);
                if (n >= 0)
                {
                    if (EpollEventLayout.IsPacked && n > 0)
                    {
                        EpollEventLayout.WidenInPlace(buffer, n);
                    }

                    count = n;
                    errno = 0;
                    return true;
                }

                int e = Interop.Errno.Last();
                if (e != Interop.Errno.EINTR)
                {
                    count = 0;
                    errno = e;
                    return false;
                }

                if (timeoutMilliseconds > 0)
                {
                    remaining = Timeouts.Remaining(start, timeoutMilliseconds);
                    if (remaining == 0)
                    {
                        count = 0;
                        errno = 0;
                        return true;
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Interop.Sys.close((int)handle) == 0;

    private void ThrowIfClosed()
    {
        if (IsClosed)
        {
            throw new ObjectDisposedException(nameof(EpollHandle));
        }
    }

    private void Control(int op, int fd, EpollEvents events, ulong data)
    {
        if (!TryControl(op, fd, events, data, out int errno))
        {
            throw ErrnoNames.Create(OperationName(op, fd), errno);
        }
    }

    private void Control(int op, SafeHandle fd, EpollEvents events, ulong data)
    {
        if (fd is null)
        {
            throw new ArgumentNullException(nameof(fd));
        }

        // A disposed handle may also report itself invalid (SafeSocketHandle does): closed is checked first,
        // so that a disposed socket gives ObjectDisposedException as documented, not ArgumentException.
        if (fd.IsClosed)
        {
            throw new ObjectDisposedException(fd.GetType().Name);
        }

        if (fd.IsInvalid)
        {
            throw new ArgumentException("The handle does not hold a valid descriptor.", nameof(fd));
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(fd);
        Control(op, (int)fd.DangerousGetHandle(), events, data);
    }

    private unsafe bool TryControl(int op, int fd, EpollEvents events, ulong data, out int errno)
    {
        if (fd < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(fd), fd, "A descriptor cannot be negative.");
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(this);
        int epfd = (int)handle;
        int rc;
        if (EpollEventLayout.IsPacked)
        {
            var ev = new EpollEventLayout.Packed { Events = (uint)events, Data = data };
            rc = Interop.Sys.epoll_ctl(epfd, op, fd, &ev);
        }
        else
        {
            var ev = new EpollEventLayout.Aligned { Events = (uint)events, Data = data };
            rc = Interop.Sys.epoll_ctl(epfd, op, fd, &ev);
        }

        errno = rc == 0 ? 0 : Interop.Errno.Last();
        return rc == 0;
    }

    private static string OperationName(int op, int fd)
    {
        string name = op switch
        {
            Interop.Sys.EPOLL_CTL_ADD => "EPOLL_CTL_ADD",
            Interop.Sys.EPOLL_CTL_MOD => "EPOLL_CTL_MOD",
            _ => "EPOLL_CTL_DEL",
        };
        return "epoll_ctl(" + name + ", fd " + fd.ToString(System.Globalization.CultureInfo.InvariantCulture) + ")";
    }
}
