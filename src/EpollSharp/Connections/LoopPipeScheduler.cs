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

/// <summary>
/// A pipe reader's scheduler with continuations on the loop (<see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>):
/// runs the reader's continuation at once when the flush (or other completion) that schedules it is on the loop thread, so
/// that a message goes on through the next stage within the step that brought it, rather than in a posted step after every
/// other connection's; from any other thread it hands the continuation to <c>post</c>. The TLS layer's pipes use it.
/// </summary>
internal sealed class InlineOnLoopPipeScheduler : PipeScheduler
{
    private readonly EventLoop _loop;
    private readonly PipeScheduler _post;

    /// <summary>Makes a scheduler that runs continuations at once on <paramref name="loop"/>'s thread, else hands them to <paramref name="post"/>.</summary>
    public InlineOnLoopPipeScheduler(EventLoop loop, PipeScheduler post)
    {
        _loop = loop;
        _post = post;
    }

    /// <inheritdoc/>
    public override void Schedule(Action<object?> action, object? state)
    {
        if (_loop.IsOnLoopThread)
        {
            action(state);
        }
        else
        {
            _post.Schedule(action, state);
        }
    }
}
