using EpollSharp.Backends;

namespace EpollSharp.Tests.Util;

/// <summary>The backends a conformance test runs on: every one, skipped with the reason where it is unavailable.</summary>
public static class Backends
{
    public static IEnumerable<object[]> All()
    {
        yield return new object[] { EventLoopBackend.Epoll };
        yield return new object[] { EventLoopBackend.Kqueue };
        yield return new object[] { EventLoopBackend.Managed };
        yield return new object[] { EventLoopBackend.IoUring };
    }

    /// <summary>Skips the calling test when <paramref name="backend"/> cannot run here.</summary>
    public static void SkipUnlessAvailable(EventLoopBackend backend)
    {
        bool available = BackendFactory.IsAvailable(backend, out string reason);
        Skip.IfNot(available, $"{backend} backend unavailable: {reason}");
    }

    public static EventLoop CreateLoop(EventLoopBackend backend, int maxEvents = 256, System.Action<System.Exception>? onError = null)
    {
        SkipUnlessAvailable(backend);
        return new EventLoop(new EventLoopOptions { Backend = backend, MaxEventsPerWait = maxEvents, UnhandledExceptionHandler = onError });
    }
}
