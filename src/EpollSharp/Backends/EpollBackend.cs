using System;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// The Linux backend: one epoll instance and one eventfd for wake-ups. Modes map directly to the
/// kernel's: level (default), <c>EPOLLET</c>, <c>EPOLLONESHOT</c>. Readable interest also asks for
/// <c>EPOLLRDHUP</c>, so that a peer's half-close is reported.
/// </summary>
internal sealed class EpollBackend : IPollBackend
{
    private const ulong WakeToken = ulong.MaxValue;

    private readonly EpollHandle _epoll;
    private readonly EventFdHandle _wake;
    private readonly EpollEvent[] _buffer;

    public EpollBackend(int maxEvents)
    {
        _epoll = EpollHandle.Create();
        try
        {
            _wake = EventFdHandle.Create();
            _epoll.Add(_wake, EpollEvents.In, WakeToken);
        }
        catch
        {
            _wake?.Dispose();
            _epoll.Dispose();
            throw;
        }

        _buffer = new EpollEvent[maxEvents];
    }

    public EventLoopBackend Kind => EventLoopBackend.Epoll;

    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        if (!_epoll.TryAdd(target.FileDescriptor, ToEvents(interest, mode), token, out int errno))
        {
            throw Translate("register", target, errno);
        }
    }

    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        if (!_epoll.TryModify(target.FileDescriptor, ToEvents(interest, mode), token, out int errno))
        {
            throw Translate("change", target, errno);
        }
    }

    public void Remove(BackendTarget target)
    {
        // ENOENT/EBADF cannot happen while the loop holds its reference on the handle; if they do, the
        // descriptor is no longer watched, which is what was asked.
        _epoll.TryDelete(target.FileDescriptor, out _);
    }

    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        int capacity = Math.Min(events.Length, _buffer.Length);
        int n = _epoll.Wait(_buffer.AsSpan(0, capacity), timeoutMilliseconds);
        int written = 0;
        for (int i = 0; i < n; i++)
        {
            EpollEvent ev = _buffer[i];
            if (ev.Data == WakeToken)
            {
                _wake.TryRead(out _);
                continue;
            }

            events[written].Token = ev.Data;
            events[written].Readiness = ToReadiness(ev.Events);
            written++;
        }

        return written;
    }

    public void Wake() => _wake.Signal();

    public void Dispose()
    {
        _epoll.Dispose();
        _wake.Dispose();
    }

    internal static EpollEvents ToEvents(Interest interest, TriggerMode mode)
    {
        EpollEvents events = EpollEvents.None;
        if ((interest & Interest.Readable) != 0)
        {
            events |= EpollEvents.In | EpollEvents.RdHup;
        }

        if ((interest & Interest.Writable) != 0)
        {
            events |= EpollEvents.Out;
        }

        return mode switch
        {
            TriggerMode.Edge => events | EpollEvents.EdgeTriggered,
            TriggerMode.OneShot => events | EpollEvents.OneShot,
            _ => events,
        };
    }

    internal static Readiness ToReadiness(EpollEvents events)
    {
        Readiness r = Readiness.None;
        if ((events & (EpollEvents.In | EpollEvents.Pri | EpollEvents.RdNorm)) != 0)
        {
            r |= Readiness.Readable;
        }

        if ((events & (EpollEvents.Out | EpollEvents.WrNorm)) != 0)
        {
            r |= Readiness.Writable;
        }

        if ((events & EpollEvents.RdHup) != 0)
        {
            r |= Readiness.ReadClosed;
        }

        if ((events & EpollEvents.Hup) != 0)
        {
            r |= Readiness.Closed;
        }

        if ((events & EpollEvents.Err) != 0)
        {
            r |= Readiness.Error;
        }

        return r;
    }

    private static Exception Translate(string what, BackendTarget target, int errno)
    {
        return errno switch
        {
            Interop.Errno.EPERM => new ArgumentException(
                "The handle does not support readiness notification (regular files and directories cannot be watched with epoll).", "handle"),
            Interop.Errno.EEXIST => new ArgumentException(
                "The handle is already registered with this event loop; change the existing registration's interest instead.", "handle"),
            Interop.Errno.EBADF => new ArgumentException("The handle's descriptor is not open.", "handle"),
            _ => ErrnoNames.Create(
                "epoll_ctl (" + what + " fd " + target.FileDescriptor.ToString(System.Globalization.CultureInfo.InvariantCulture) + ")", errno),
        };
    }
}
