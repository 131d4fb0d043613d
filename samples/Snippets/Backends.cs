using System;
using EpollSharp;

namespace Snippets;

/// <summary>Backends and portability: choosing a backend, and what a loop says it uses.</summary>
internal static class Backends
{
    public static void Run()
    {
        #region choose-backend
        // Auto (the default) takes the EPOLLSHARP_BACKEND environment variable when it is set (epoll, kqueue,
        // managed), otherwise epoll on Linux, kqueue on macOS and FreeBSD, the managed fallback elsewhere.
        var options = new EventLoopOptions
        {
            Backend = EventLoopBackend.Auto,
            MaxEventsPerWait = 512,                  // events taken per wait; a full buffer means "wait again at once"
        };

        EventLoop loop;
        try
        {
            loop = new EventLoop(options);
        }
        catch (PlatformNotSupportedException e)
        {
            Console.Error.WriteLine($"no event loop here: {e.Message}");
            throw;
        }

        using (loop)
        {
            Console.WriteLine($"this loop uses {loop.Backend}");   // never Auto
        }
        #endregion
        Program.Check(loop.Backend != EventLoopBackend.Auto, "a concrete backend");
    }
}
