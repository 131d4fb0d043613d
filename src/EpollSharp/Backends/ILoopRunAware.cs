namespace EpollSharp.Backends;

/// <summary>
/// A backend that needs to know when the loop's thread leaves <see cref="EventLoop.Run"/> without releasing the loop (a
/// <see cref="EventLoop.Stop"/>): the io_uring ring bound to that thread must take back what it has in the kernel while
/// that thread can still do it, since the loop may run again on another thread.
/// </summary>
internal interface ILoopRunAware
{
    /// <summary>On the loop's thread, as <see cref="EventLoop.Run"/> ends and the loop stays usable. Never throws.</summary>
    void RunEnded();
}
