using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>Add, modify and delete, by descriptor number and by SafeHandle, observed through Wait.</summary>
public class EpollControlTests
{
    [Fact]
    public void AddByNumberReportsReadiness()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 7);
        Assert.Empty(Waits.Poll(epoll));
        pair.Peer.Send(new byte[] { 1 });
        var ev = Waits.WaitFor(epoll, 7, EpollEvents.In);
        Assert.Equal(EpollEvents.In, ev.Events);
    }

    [Fact]
    public void AddBySafeHandleReportsReadiness()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.Local.SafeHandle, EpollEvents.In, 8);
        pair.Peer.Send(new byte[] { 1 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 8, EpollEvents.In).Events);
    }

    [Fact]
    public void ModifyByNumberChangesInterestAndData()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 1);
        Assert.Empty(Waits.Poll(epoll));
        epoll.Modify(pair.LocalFd, EpollEvents.Out, 2);
        var events = Waits.Poll(epoll);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 2) }, events);
    }

    [Fact]
    public void ModifyBySafeHandleChangesInterestAndData()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.Local.SafeHandle, EpollEvents.Out, 1);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 1) }, Waits.Poll(epoll));
        epoll.Modify(pair.Local.SafeHandle, EpollEvents.In, 3);
        Assert.Empty(Waits.Poll(epoll));
        pair.Peer.Send(new byte[] { 1 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 3, EpollEvents.In).Events);
    }

    [Fact]
    public void DeleteByNumberStopsReports()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.Out, 1);
        Assert.Single(Waits.Poll(epoll));
        epoll.Delete(pair.LocalFd);
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void DeleteBySafeHandleStopsReports()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.Local.SafeHandle, EpollEvents.Out, 1);
        Assert.Single(Waits.Poll(epoll));
        epoll.Delete(pair.Local.SafeHandle);
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void DeletedDescriptorCanBeAddedAgain()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.Out, 1);
        epoll.Delete(pair.LocalFd);
        epoll.Add(pair.LocalFd, EpollEvents.Out, 2);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 2) }, Waits.Poll(epoll));
    }

    [Fact]
    public void EventFdHandleIsAcceptedAsSafeHandle()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd, EpollEvents.In, 5);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, 5) }, Waits.Poll(epoll));
        epoll.Modify(efd, EpollEvents.In, 6);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, 6) }, Waits.Poll(epoll));
        epoll.Delete(efd);
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void TryVariantsSucceedWithErrnoZero()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        Assert.True(epoll.TryAdd(pair.LocalFd, EpollEvents.Out, 1, out int errno));
        Assert.Equal(0, errno);
        Assert.True(epoll.TryModify(pair.LocalFd, EpollEvents.Out, 2, out errno));
        Assert.Equal(0, errno);
        var buffer = new EpollEvent[4];
        Assert.True(epoll.TryWait(buffer, 0, out int count, out errno));
        Assert.Equal(0, errno);
        Assert.Equal(1, count);
        Assert.Equal(new EpollEvent(EpollEvents.Out, 2), buffer[0]);
        Assert.True(epoll.TryDelete(pair.LocalFd, out errno));
        Assert.Equal(0, errno);
        Assert.True(epoll.TryWait(buffer, 0, out count, out errno));
        Assert.Equal(0, count);
    }

    [Fact]
    public void OneDescriptorInTwoInstances()
    {
        using var a = EpollHandle.Create();
        using var b = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        a.Add(efd.FileDescriptor, EpollEvents.In, 10);
        b.Add(efd.FileDescriptor, EpollEvents.In, 20);
        Assert.Equal(10UL, Waits.Poll(a).Single().Data);
        Assert.Equal(20UL, Waits.Poll(b).Single().Data);
    }

    [Fact]
    public void ExclusiveIsAcceptedByAdd()
    {
        using var a = EpollHandle.Create();
        using var b = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        a.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive, 1);
        b.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive, 2);
        efd.Signal();
        // EPOLLEXCLUSIVE promises that at least one of the instances is told (not which, not how many).
        Assert.InRange(Waits.Poll(a).Length + Waits.Poll(b).Length, 1, 2);
    }

    [Fact]
    public void EpollInstanceCanWatchAnother()
    {
        using var outer = EpollHandle.Create();
        using var inner = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        inner.Add(efd.FileDescriptor, EpollEvents.In, 1);
        outer.Add(inner, EpollEvents.In, 99);
        Assert.Empty(Waits.Poll(outer));
        efd.Signal();
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, 99) }, Waits.Poll(outer));
    }

    [Fact]
    public void ListeningSocketIsReadableWhenAConnectionWaits()
    {
        using var epoll = EpollHandle.Create();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen(4);
        epoll.Add(listener.SafeHandle, EpollEvents.In, 42);
        Assert.Empty(Waits.Poll(epoll));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 42, EpollEvents.In).Events);
        using var accepted = listener.Accept();
        Assert.Empty(Waits.Poll(epoll));
    }
}
