#if !NETCOREAPP3_0_OR_GREATER
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    // The netstandard2.0 way of queuing an offload: through a cached WaitCallback with the item as its state.
    private abstract partial class OffloadItem
    {
        /// <summary>Runs <see cref="Execute"/> for the item passed as the callback's state.</summary>
        private static readonly WaitCallback s_execute = static state => ((OffloadItem)state!).Execute();

        /// <summary>Queues the work to the thread pool.</summary>
        public void Queue() => ThreadPool.UnsafeQueueUserWorkItem(s_execute, this);
    }
}
#endif
