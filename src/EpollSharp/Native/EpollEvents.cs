using System;

namespace EpollSharp.Native;

/// <summary>
/// The <c>EPOLL*</c> event flags of <c>&lt;sys/epoll.h&gt;</c>, with their Linux values. Used both as the
/// interest given to <see cref="EpollHandle.Add(int, EpollEvents, ulong)"/> and as the readiness reported
/// by <see cref="EpollHandle.Wait(Span{EpollEvent}, int)"/>.
/// </summary>
[Flags]
#pragma warning disable CA1711 // "Events" is the name epoll gives this set.
public enum EpollEvents : uint
#pragma warning restore CA1711
{
    /// <summary>No event.</summary>
    None = 0,
    /// <summary><c>EPOLLIN</c>: the descriptor is readable (data, a pending connection, or end of stream).</summary>
    In = 0x001,
    /// <summary><c>EPOLLPRI</c>: exceptional condition, such as TCP urgent data.</summary>
    Pri = 0x002,
    /// <summary><c>EPOLLOUT</c>: the descriptor is writable.</summary>
    Out = 0x004,
    /// <summary><c>EPOLLERR</c>: an error condition. Always reported; need not be requested.</summary>
    Err = 0x008,
    /// <summary><c>EPOLLHUP</c>: hang-up. Always reported; need not be requested.</summary>
    Hup = 0x010,
    /// <summary><c>EPOLLRDNORM</c>: normal data readable (equivalent to <see cref="In"/>).</summary>
    RdNorm = 0x040,
    /// <summary><c>EPOLLRDBAND</c>: priority band data readable.</summary>
    RdBand = 0x080,
    /// <summary><c>EPOLLWRNORM</c>: writable (equivalent to <see cref="Out"/>).</summary>
    WrNorm = 0x100,
    /// <summary><c>EPOLLWRBAND</c>: priority data writable.</summary>
    WrBand = 0x200,
    /// <summary><c>EPOLLMSG</c>: unused by Linux.</summary>
    Msg = 0x400,
    /// <summary><c>EPOLLRDHUP</c>: the peer closed its sending side (half-close), or the connection closed.</summary>
    RdHup = 0x2000,
    /// <summary><c>EPOLLEXCLUSIVE</c>: exclusive wake-up, for one descriptor in several epoll instances. Only with add.</summary>
    Exclusive = 1u << 28,
    /// <summary><c>EPOLLWAKEUP</c>: keep the system from suspending while the event is pending (needs CAP_BLOCK_SUSPEND).</summary>
    Wakeup = 1u << 29,
    /// <summary><c>EPOLLONESHOT</c>: report once, then disable until re-armed with modify.</summary>
    OneShot = 1u << 30,
    /// <summary><c>EPOLLET</c>: edge-triggered; the caller must drain the descriptor until <c>EAGAIN</c>.</summary>
    EdgeTriggered = 1u << 31,
}
