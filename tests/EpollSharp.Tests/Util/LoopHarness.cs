using System.Diagnostics;

namespace EpollSharp.Tests.Util;

/// <summary>Runs a loop on its own thread for a test, and stops and disposes it at the end.</summary>
public sealed class LoopHarness : IDisposable
{
    public LoopHarness(EventLoop loop)
    {
        Loop = loop;
        Completion = loop.Start("test loop");
    }

    public EventLoop Loop { get; }

    public Task Completion { get; }

    /// <summary>Runs <paramref name="func"/> on the loop thread and returns its result.</summary>
    public T Invoke<T>(Func<T> func)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Loop.Post(() =>
        {
            try
            {
                tcs.SetResult(func());
            }
            catch (Exception ex)
            {
                tcs.SetException(ex);
            }
        });
        if (!tcs.Task.Wait(TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException("The loop did not run the posted work within 10 s.");
        }

        return tcs.Task.Result;
    }

    public void Invoke(Action action) => Invoke(() =>
    {
        action();
        return true;
    });

    /// <summary>Waits (polling) until <paramref name="condition"/> holds, failing after <paramref name="seconds"/>.</summary>
    public static void WaitUntil(Func<bool> condition, string what, double seconds = 10)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed.TotalSeconds > seconds)
            {
                throw new TimeoutException($"Timed out after {seconds} s waiting for: {what}");
            }

            Thread.Sleep(1);
        }
    }

    /// <summary>Lets the loop run a few full iterations (each posts the next), so that any pending readiness is dispatched.</summary>
    public void Settle(int iterations = 5, int sleepMs = 20)
    {
        for (int i = 0; i < iterations; i++)
        {
            Invoke(() => true);
            Thread.Sleep(sleepMs / iterations + 1);
        }
    }

    public void Dispose()
    {
        Loop.Dispose();
        if (!Completion.Wait(TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException("The loop did not stop within 10 s of Dispose.");
        }
    }
}
