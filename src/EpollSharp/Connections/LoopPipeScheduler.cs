using System;
using System.IO.Pipelines;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// Runs pipe continuations on an <see cref="EventLoop"/>'s thread (<see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>):
/// each is posted to the loop, which allocates nothing. Once the loop is disposed a continuation goes to the thread pool
/// instead, so that an <c>await</c> still finishes (the connection has been reset by then).
/// </summary>
internal sealed class LoopPipeScheduler : PipeScheduler
{
    private static readonly WaitCallback s_runOnPool = static state =>
    {
        var (action, actionState) = ((Action<object?>, object?))state!;
        action(actionState);
    };

    private readonly EventLoop _loop;

    public LoopPipeScheduler(EventLoop loop) => _loop = loop;

    public override void Schedule(Action<object?> action, object? state)
    {
        if (!_loop.TryPost(action, state))
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(s_runOnPool, (action, state));
        }
    }
}
