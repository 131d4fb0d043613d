using System;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>Chooses and creates the backend for a loop.</summary>
internal static class BackendFactory
{
    /// <summary>The environment variable that <see cref="EventLoopBackend.Auto"/> honours.</summary>
    internal const string EnvironmentVariable = "EPOLLSHARP_BACKEND";

    /// <summary>Resolves <see cref="EventLoopBackend.Auto"/> to a concrete backend.</summary>
    internal static EventLoopBackend Resolve(EventLoopBackend requested)
    {
        if (requested != EventLoopBackend.Auto)
        {
            return requested;
        }

        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env))
        {
            return env!.Trim().ToUpperInvariant() switch
            {
                "EPOLL" => EventLoopBackend.Epoll,
                "KQUEUE" => EventLoopBackend.Kqueue,
                "MANAGED" => EventLoopBackend.Managed,
                "IO_URING" or "IOURING" => EventLoopBackend.IoUring,
                "AUTO" => PlatformDefault(),
                _ => throw new InvalidOperationException(
                    $"The environment variable {EnvironmentVariable} is '{env}'; expected one of: epoll, io_uring, kqueue, managed, auto."),
            };
        }

        return PlatformDefault();
    }

    /// <summary>Whether <paramref name="kind"/> can be created in this process; when not, why.</summary>
    internal static bool IsAvailable(EventLoopBackend kind, out string reason)
    {
        switch (kind)
        {
            case EventLoopBackend.Epoll:
                reason = EpollHandle.IsSupported ? string.Empty : "epoll needs Linux.";
                return EpollHandle.IsSupported;
            case EventLoopBackend.Kqueue:
                return KqueueLibrary.IsAvailable(out reason);
            case EventLoopBackend.IoUring:
                return IoUringBackend.IsAvailable(out reason);
            case EventLoopBackend.Managed:
                // Managed socket APIs only: available wherever .NET runs.
                reason = string.Empty;
                return true;
            default:
                reason = "Unknown backend.";
                return false;
        }
    }

    internal static IPollBackend Create(EventLoopBackend requested, int maxEvents, bool? ioUringCompletions = null)
    {
        EventLoopBackend kind = Resolve(requested);
        return kind switch
        {
            EventLoopBackend.Epoll => EpollHandle.IsSupported
                ? new EpollBackend(maxEvents)
                : throw new PlatformNotSupportedException("The epoll backend needs Linux; use EventLoopBackend.Auto or Managed on this platform."),
            EventLoopBackend.Kqueue => KqueueLibrary.IsAvailable(out string kqueueReason)
                ? new KqueueBackend(maxEvents)
                : throw new PlatformNotSupportedException(kqueueReason),
            EventLoopBackend.Managed => new ManagedBackend(maxEvents),
            EventLoopBackend.IoUring => IoUringBackend.IsAvailable(out string ioUringReason)
                ? new IoUringBackend(maxEvents, 0, ioUringCompletions ?? IoUringBackend.CompletionsByDefault)
                : throw new PlatformNotSupportedException("The io_uring backend is not available: " + ioUringReason),
            _ => throw new ArgumentOutOfRangeException(nameof(requested), requested, "Unknown backend."),
        };
    }

    private static EventLoopBackend PlatformDefault()
    {
        if (Platform.IsLinux)
        {
            return EventLoopBackend.Epoll;
        }

        // Never on Linux (epoll is there), even when EPOLLSHARP_KQUEUE_LIBRARY names libkqueue.
        if ((Platform.IsMacOS || Platform.IsFreeBSD) && KqueueLibrary.IsAvailable(out _))
        {
            return EventLoopBackend.Kqueue;
        }

        return EventLoopBackend.Managed;
    }
}
