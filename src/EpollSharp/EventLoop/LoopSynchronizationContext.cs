using System;
using System.Threading;

namespace EpollSharp;

/// <summary>
/// Posts continuations to an <see cref="EventLoop"/>; installed on the loop thread while it runs. After the loop is disposed,
/// a continuation goes to the thread pool instead: it is neither lost (an <c>await</c> would never finish) nor a crash.
/// </summary>
internal sealed class LoopSynchronizationContext : SynchronizationContext
{
    private readonly EventLoop _loop;

    public LoopSynchronizationContext(EventLoop loop) => _loop = loop;

    public override void Post(SendOrPostCallback d, object? state)
    {
        if (d is null)
        {
            throw new ArgumentNullException(nameof(d));
        }

        if (!_loop.TryEnqueue(d, state))
        {
            // The loop was disposed: run the continuation on the thread pool, with no synchronization context.
            ThreadPool.QueueUserWorkItem(static s =>
            {
                var (callback, callbackState) = ((SendOrPostCallback, object?))s!;
                callback(callbackState);
            }, (d, state));
        }
    }

    public override void Send(SendOrPostCallback d, object? state)
    {
        if (d is null)
        {
            throw new ArgumentNullException(nameof(d));
        }

        if (_loop.IsOnLoopThread)
        {
            d(state);
            return;
        }

        using var done = new ManualResetEventSlim();
        Exception? error = null;
        _loop.Post(() =>
        {
            try
            {
                d(state);
            }
            catch (Exception ex)
            {
                error = ex;
            }
            finally
            {
                done.Set();
            }
        });
        done.Wait();
        if (error is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        }
    }

    public override SynchronizationContext CreateCopy() => this;
}
