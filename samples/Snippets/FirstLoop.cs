using System;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>Getting started: a loop, posted work, a timer, stop.</summary>
internal static class FirstLoop
{
    public static void Run()
    {
        #region first-loop
        using var loop = new EventLoop();               // EventLoopBackend.Auto: epoll on Linux
        Console.WriteLine($"backend: {loop.Backend}");

        Task stopped = loop.Start();                    // a new background thread runs the loop

        // Post and Schedule are safe from any thread; the callbacks run on the loop thread.
        loop.Post(() => Console.WriteLine($"posted work on the loop thread: {loop.IsOnLoopThread}"));
        loop.Schedule(TimeSpan.FromMilliseconds(50), static timer =>
        {
            Console.WriteLine("the timer fired; stopping the loop");
            timer.Loop.Stop();                          // Run returns after this iteration
        });

        stopped.Wait();                                 // faults if a callback threw
        #endregion
        Program.Check(!loop.IsRunning, "the loop stopped");
    }
}
