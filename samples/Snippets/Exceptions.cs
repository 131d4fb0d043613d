using System;
using System.Threading;
using EpollSharp;

namespace Snippets;

/// <summary>Concepts: what happens to an exception a callback throws.</summary>
internal static class Exceptions
{
    public static void Run()
    {
        int handled = 0;
        #region exception-handler
        var options = new EventLoopOptions
        {
            // Called on the loop thread; the loop goes on with the next callback. Without a handler the loop
            // stops after the iteration and Run rethrows: an exception is never swallowed.
            UnhandledExceptionHandler = ex =>
            {
                Console.Error.WriteLine($"callback failed: {ex.Message}");
                Interlocked.Increment(ref handled);
            },
        };

        using var loop = new EventLoop(options);
        loop.Post(() => throw new InvalidOperationException("a bug in one callback"));
        loop.Post(() => loop.Stop());               // still runs: the loop survived the first one
        loop.Run();
        #endregion
        Program.Check(handled == 1, "the handler saw the exception once");

        // Without a handler: Run rethrows.
        using var strict = new EventLoop();
        strict.Post(() => throw new InvalidOperationException("unhandled"));
        try
        {
            strict.Run();
            Program.Check(false, "Run rethrew");
        }
        catch (InvalidOperationException e) when (e.Message == "unhandled")
        {
            Console.WriteLine("without a handler, Run rethrew the callback's exception");
        }
    }
}
