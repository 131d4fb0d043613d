#if NETCOREAPP3_0_OR_GREATER
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    // The .NET Core way of queuing an offload: the item is itself the thread pool's work item, so queuing allocates nothing more.
    private abstract partial class OffloadItem : IThreadPoolWorkItem
    {
        /// <summary>Queues the work to the thread pool (global queue: the loop thread does not run pool work).</summary>
        public void Queue() => ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }
}
#endif
