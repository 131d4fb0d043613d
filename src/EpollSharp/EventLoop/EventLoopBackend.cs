namespace EpollSharp;

/// <summary>The readiness mechanism an <see cref="EventLoop"/> uses.</summary>
public enum EventLoopBackend
{
    /// <summary>
    /// Choose for the platform: the <c>EPOLLSHARP_BACKEND</c> environment variable when it is set
    /// (<c>epoll</c>, <c>io_uring</c>, <c>kqueue</c> or <c>managed</c>), otherwise <see cref="Epoll"/> on Linux,
    /// <see cref="Kqueue"/> on macOS and FreeBSD, and <see cref="Managed"/> elsewhere.
    /// </summary>
    Auto = 0,

    /// <summary>Linux epoll.</summary>
    Epoll = 1,

    /// <summary>BSD kqueue (macOS, FreeBSD; or a kqueue emulation named by <c>EPOLLSHARP_KQUEUE_LIBRARY</c>).</summary>
    Kqueue = 2,

    /// <summary>A fallback built only on managed socket APIs; runs wherever .NET runs, at a cost per wait that grows with the number of registrations.</summary>
    Managed = 3,

    /// <summary>
    /// Linux io_uring, for readiness: each registration is a poll request on one ring (Linux 5.13 or later, with
    /// io_uring not disabled by <c>kernel.io_uring_disabled</c> or a seccomp filter). Chosen only when asked for, by this
    /// value or <c>EPOLLSHARP_BACKEND=io_uring</c>: <see cref="Auto"/> keeps choosing <see cref="Epoll"/> on Linux until
    /// measurements show io_uring ahead. Linux only (every build of the package, netstandard2.0 included).
    /// </summary>
    IoUring = 4,
}
