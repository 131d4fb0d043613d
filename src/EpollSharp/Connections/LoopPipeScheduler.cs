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
/// other connection's; from any other thread it hands the continuation to <c>post</c>. A <i>gated</i> scheduler runs it
/// at once only while the loop opened it (<see cref="OpenOnce"/>), once: the raw input pipe opens it around the loop's
/// flush of received bytes, so that the application's read continues inside that flush while every other completion on
/// the loop thread (the peer's end of stream or a close inside the loop's handling of it, <c>CancelPendingRead</c>) is
/// still posted. The TLS layer's pipes use it ungated.
/// </summary>
internal sealed class InlineOnLoopPipeScheduler : PipeScheduler
{
    private readonly EventLoop _loop;
    private readonly PipeScheduler _post;
    private readonly bool _gated;

    /// <summary>Gated: the loop thread lets the next continuation run at once (set and read on the loop thread only).</summary>
    private bool _open;

    /// <summary>Makes a scheduler that runs continuations at once on <paramref name="loop"/>'s thread (when <paramref name="gated"/>, only while opened), else hands them to <paramref name="post"/>.</summary>
    public InlineOnLoopPipeScheduler(EventLoop loop, PipeScheduler post, bool gated)
    {
        _loop = loop;
        _post = post;
        _gated = gated;
    }

    /// <summary>Gated: lets the next continuation scheduled on the loop thread run at once, until <see cref="Close"/>. Loop thread only.</summary>
    public void OpenOnce() => _open = true;

    /// <summary>Gated: ends what <see cref="OpenOnce"/> allowed, if no continuation used it. Loop thread only.</summary>
    public void Close() => _open = false;

    /// <inheritdoc/>
    public override void Schedule(Action<object?> action, object? state)
    {
        if ((!_gated || _open) && _loop.IsOnLoopThread)
        {
            _open = false;
            action(state);
        }
        else
        {
            _post.Schedule(action, state);
        }
    }
}
