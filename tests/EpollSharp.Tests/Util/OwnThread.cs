namespace EpollSharp.Tests.Util;

/// <summary>Work that blocks for long (a wait in the kernel), started on a thread of its own rather than a pool thread.</summary>
public static class OwnThread
{
    /// <summary>Runs <paramref name="func"/> on a dedicated thread (<see cref="TaskCreationOptions.LongRunning"/>, default scheduler, no cancellation).</summary>
    public static Task<T> Start<T>(Func<T> func) =>
        Task.Factory.StartNew(func, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
}
