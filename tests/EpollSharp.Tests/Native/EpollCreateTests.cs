using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

public class EpollCreateTests
{
    [Fact]
    public void IsSupportedOnLinux() => Assert.True(EpollHandle.IsSupported);

    [Fact]
    public void CreateReturnsAnOpenEpollDescriptor()
    {
        using var epoll = EpollHandle.Create();
        Assert.False(epoll.IsInvalid);
        Assert.False(epoll.IsClosed);
        Assert.True(epoll.FileDescriptor >= 0);
        Assert.Equal("anon_inode:[eventpoll]", Fds.LinkTarget(epoll.FileDescriptor));
    }

    [Fact]
    public void CreateSetsCloseOnExec()
    {
        using var epoll = EpollHandle.Create();
        int flags = Fds.Flags(epoll.FileDescriptor);
        Assert.True((flags & Fds.OCloExec) != 0, $"flags 0{Convert.ToString(flags, 8)} lack O_CLOEXEC (02000000)");
        Assert.Equal(Fds.OCloExec, Interop.Sys.EPOLL_CLOEXEC);
    }

    [Fact]
    public void EachCreateIsANewInstance()
    {
        using var a = EpollHandle.Create();
        using var b = EpollHandle.Create();
        Assert.NotEqual(a.FileDescriptor, b.FileDescriptor);
    }

    [Fact]
    public void InfiniteTimeoutIsMinusOne() => Assert.Equal(System.Threading.Timeout.Infinite, EpollHandle.InfiniteTimeout);
}

[Collection(FdNumberCollection.Name)]
public class EpollReleaseTests
{
    [Fact]
    public void DisposeClosesTheDescriptor()
    {
        var epoll = EpollHandle.Create();
        int fd = epoll.FileDescriptor;
        Assert.True(Fds.IsOpen(fd));
        epoll.Dispose();
        Assert.True(epoll.IsClosed);
        Assert.False(Fds.IsOpen(fd), $"fd {fd} is still in /proc/self/fd after Dispose");
    }

    [Fact]
    public void DisposeTwiceIsHarmless()
    {
        var epoll = EpollHandle.Create();
        epoll.Dispose();
        epoll.Dispose();
        Assert.True(epoll.IsClosed);
    }

    [Fact]
    public void CloseClosesTheDescriptor()
    {
        var epoll = EpollHandle.Create();
        int fd = epoll.FileDescriptor;
        epoll.Close();
        Assert.False(Fds.IsOpen(fd));
    }

    [Fact]
    public void ReleaseWaitsForACallInProgress()
    {
        // SafeHandle reference counting: Dispose while a Wait holds a reference defers the close.
        using var efd = EventFdHandle.Create();
        var epoll = EpollHandle.Create();
        int fd = epoll.FileDescriptor;
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        bool added = false;
        epoll.DangerousAddRef(ref added);
        epoll.Dispose();
        Assert.True(Fds.IsOpen(fd), "the descriptor must stay open while a reference is held");
        epoll.DangerousRelease();
        Assert.False(Fds.IsOpen(fd));
    }

    [Fact]
    public void EventFdDisposeClosesTheDescriptor()
    {
        var efd = EventFdHandle.Create();
        int fd = efd.FileDescriptor;
        Assert.Equal("anon_inode:[eventfd]", Fds.LinkTarget(fd));
        efd.Dispose();
        Assert.False(Fds.IsOpen(fd));
    }
}
