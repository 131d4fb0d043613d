using System;
using System.Collections.Generic;
using System.Threading.Tasks;

namespace EpollSharp;

/// <summary>Runs tasks on an <see cref="EventLoop"/>'s thread.</summary>
internal sealed class LoopTaskScheduler : TaskScheduler
{
    private static readonly Action<object?> s_execute = static state =>
    {
        var (scheduler, task) = ((LoopTaskScheduler, Task))state!;
        scheduler.TryExecuteTask(task);
    };

    private readonly EventLoop _loop;

    public LoopTaskScheduler(EventLoop loop) => _loop = loop;

    public override int MaximumConcurrencyLevel => 1;

    protected override void QueueTask(Task task) => _loop.Enqueue(s_execute, (this, task));

    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued)
        => _loop.IsOnLoopThread && TryExecuteTask(task);

    protected override IEnumerable<Task>? GetScheduledTasks() => null;
}
