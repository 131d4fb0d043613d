using System.IO;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>Every error path: kernel errors (as exceptions and as Try results) and argument checks.</summary>
public class EpollErrorTests
{
    private static NativeCallException AssertErrno(int errno, string name, Action action)
    {
        var e = Assert.Throws<NativeCallException>(action);
        Assert.Equal(errno, e.Errno);
        Assert.Equal(name, e.ErrorName);
        Assert.Equal(errno, e.HResult);
        Assert.Contains(name, e.Message, StringComparison.Ordinal);
        Assert.Contains(e.Operation, e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<IOException>(e);
        return e;
    }

    [Fact]
    public void AddTwiceIsEexist()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 1);
        var e = AssertErrno(Interop.Errno.EEXIST, "EEXIST", () => epoll.Add(pair.LocalFd, EpollEvents.In, 1));
        Assert.Equal($"epoll_ctl(EPOLL_CTL_ADD, fd {pair.LocalFd})", e.Operation);
        AssertErrno(Interop.Errno.EEXIST, "EEXIST", () => epoll.Add(pair.Local.SafeHandle, EpollEvents.Out, 2));
        Assert.False(epoll.TryAdd(pair.LocalFd, EpollEvents.In, 1, out int errno));
        Assert.Equal(Interop.Errno.EEXIST, errno);
    }

    [Fact]
    public void ModifyUnregisteredIsEnoent()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        var e = AssertErrno(Interop.Errno.ENOENT, "ENOENT", () => epoll.Modify(pair.LocalFd, EpollEvents.In, 1));
        Assert.Equal($"epoll_ctl(EPOLL_CTL_MOD, fd {pair.LocalFd})", e.Operation);
        AssertErrno(Interop.Errno.ENOENT, "ENOENT", () => epoll.Modify(pair.Local.SafeHandle, EpollEvents.In, 1));
        Assert.False(epoll.TryModify(pair.LocalFd, EpollEvents.In, 1, out int errno));
        Assert.Equal(Interop.Errno.ENOENT, errno);
    }

    [Fact]
    public void DeleteUnregisteredIsEnoent()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        var e = AssertErrno(Interop.Errno.ENOENT, "ENOENT", () => epoll.Delete(pair.LocalFd));
        Assert.Equal($"epoll_ctl(EPOLL_CTL_DEL, fd {pair.LocalFd})", e.Operation);
        AssertErrno(Interop.Errno.ENOENT, "ENOENT", () => epoll.Delete(pair.Local.SafeHandle));
        Assert.False(epoll.TryDelete(pair.LocalFd, out int errno));
        Assert.Equal(Interop.Errno.ENOENT, errno);
    }

    [Fact]
    public void DeleteTwiceIsEnoent()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        epoll.Delete(efd.FileDescriptor);
        AssertErrno(Interop.Errno.ENOENT, "ENOENT", () => epoll.Delete(efd.FileDescriptor));
    }

    [Fact]
    public void NumberThatIsNotOpenIsEbadf()
    {
        using var epoll = EpollHandle.Create();
        AssertErrno(Interop.Errno.EBADF, "EBADF", () => epoll.Add(Fds.NeverOpen, EpollEvents.In, 1));
        AssertErrno(Interop.Errno.EBADF, "EBADF", () => epoll.Modify(Fds.NeverOpen, EpollEvents.In, 1));
        AssertErrno(Interop.Errno.EBADF, "EBADF", () => epoll.Delete(Fds.NeverOpen));
        Assert.False(epoll.TryAdd(Fds.NeverOpen, EpollEvents.In, 1, out int errno));
        Assert.Equal(Interop.Errno.EBADF, errno);
        Assert.False(epoll.TryModify(Fds.NeverOpen, EpollEvents.In, 1, out errno));
        Assert.Equal(Interop.Errno.EBADF, errno);
        Assert.False(epoll.TryDelete(Fds.NeverOpen, out errno));
        Assert.Equal(Interop.Errno.EBADF, errno);
    }

    [Fact]
    public void RegularFileIsEperm()
    {
        using var epoll = EpollHandle.Create();
        string path = Path.GetTempFileName();
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            var e = AssertErrno(Interop.Errno.EPERM, "EPERM", () => epoll.Add(file, EpollEvents.In, 1));
            Assert.StartsWith("epoll_ctl(EPOLL_CTL_ADD, fd ", e.Operation, StringComparison.Ordinal);
            int fd = (int)file.DangerousGetHandle();
            AssertErrno(Interop.Errno.EPERM, "EPERM", () => epoll.Add(fd, EpollEvents.In, 1));
            Assert.False(epoll.TryAdd(fd, EpollEvents.In, 1, out int errno));
            Assert.Equal(Interop.Errno.EPERM, errno);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AddingTheInstanceToItselfIsEinval()
    {
        using var epoll = EpollHandle.Create();
        AssertErrno(Interop.Errno.EINVAL, "EINVAL", () => epoll.Add(epoll.FileDescriptor, EpollEvents.In, 1));
        AssertErrno(Interop.Errno.EINVAL, "EINVAL", () => epoll.Add(epoll, EpollEvents.In, 1));
        Assert.False(epoll.TryAdd(epoll.FileDescriptor, EpollEvents.In, 1, out int errno));
        Assert.Equal(Interop.Errno.EINVAL, errno);
    }

    [Fact]
    public void ExclusiveWithModifyIsEinval()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 1);
        AssertErrno(Interop.Errno.EINVAL, "EINVAL", () => epoll.Modify(efd.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive, 1));
        Assert.False(epoll.TryModify(efd.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive, 1, out int errno));
        Assert.Equal(Interop.Errno.EINVAL, errno);
        // Also on a registration that was added exclusive.
        using var other = EventFdHandle.Create();
        epoll.Add(other.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive, 2);
        AssertErrno(Interop.Errno.EINVAL, "EINVAL", () => epoll.Modify(other.FileDescriptor, EpollEvents.In, 2));
    }

    [Fact]
    public void ExclusiveWithOneShotIsEinval()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create();
        AssertErrno(Interop.Errno.EINVAL, "EINVAL", () => epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.Exclusive | EpollEvents.OneShot, 1));
    }

    [Fact]
    public void EpollInstancesAddedToEachOtherIsEloop()
    {
        using var a = EpollHandle.Create();
        using var b = EpollHandle.Create();
        a.Add(b.FileDescriptor, EpollEvents.In, 1);
        var e = AssertErrno(Interop.Errno.ELOOP, "ELOOP", () => b.Add(a.FileDescriptor, EpollEvents.In, 2));
        Assert.Equal($"epoll_ctl(EPOLL_CTL_ADD, fd {a.FileDescriptor})", e.Operation);
        Assert.False(b.TryAdd(a.FileDescriptor, EpollEvents.In, 2, out int errno));
        Assert.Equal(Interop.Errno.ELOOP, errno);
    }

    [Fact]
    public void NegativeDescriptorThrowsArgumentOutOfRangeNamingFd()
    {
        using var epoll = EpollHandle.Create();
        Action[] calls =
        {
            () => epoll.Add(-1, EpollEvents.In, 0),
            () => epoll.Modify(-1, EpollEvents.In, 0),
            () => epoll.Delete(-1),
            () => epoll.TryAdd(-1, EpollEvents.In, 0, out _),
            () => epoll.TryModify(-1, EpollEvents.In, 0, out _),
            () => epoll.TryDelete(int.MinValue, out _),
        };
        foreach (var call in calls)
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(call);
            Assert.Equal("fd", e.ParamName);
        }
    }

    [Fact]
    public void EmptyBufferThrowsArgumentExceptionNamingEvents()
    {
        using var epoll = EpollHandle.Create();
        Assert.Equal("events", Assert.Throws<ArgumentException>(() => epoll.Wait(Span<EpollEvent>.Empty, 0)).ParamName);
        Assert.Equal("events", Assert.Throws<ArgumentException>(() => epoll.Wait(Array.Empty<EpollEvent>(), TimeSpan.Zero)).ParamName);
        Assert.Equal("events", Assert.Throws<ArgumentException>(() => epoll.TryWait(Span<EpollEvent>.Empty, -1, out _, out _)).ParamName);
    }

    [Theory]
    [InlineData(-2)]
    [InlineData(-1000)]
    [InlineData(int.MinValue)]
    public void TimeoutBelowMinusOneThrowsArgumentOutOfRange(int timeout)
    {
        using var epoll = EpollHandle.Create();
        var buffer = new EpollEvent[1];
        Assert.Equal("timeoutMilliseconds", Assert.Throws<ArgumentOutOfRangeException>(() => epoll.Wait(buffer, timeout)).ParamName);
        Assert.Equal("timeoutMilliseconds", Assert.Throws<ArgumentOutOfRangeException>(() => epoll.TryWait(buffer, timeout, out _, out _)).ParamName);
    }

    [Fact]
    public void NegativeTimeSpanThrowsArgumentOutOfRange()
    {
        using var epoll = EpollHandle.Create();
        var buffer = new EpollEvent[1];
        Assert.Equal("timeout", Assert.Throws<ArgumentOutOfRangeException>(() => epoll.Wait(buffer, TimeSpan.FromMilliseconds(-2))).ParamName);
        Assert.Equal("timeout", Assert.Throws<ArgumentOutOfRangeException>(() => epoll.Wait(buffer, TimeSpan.FromTicks(-1))).ParamName);
        Assert.Equal("timeout", Assert.Throws<ArgumentOutOfRangeException>(() => epoll.Wait(buffer, TimeSpan.FromDays(30))).ParamName);
    }

    [Fact]
    public void DisposedHandleThrowsObjectDisposed()
    {
        var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Dispose();
        var buffer = new EpollEvent[1];
        Action[] calls =
        {
            () => _ = epoll.FileDescriptor,
            () => epoll.Add(pair.LocalFd, EpollEvents.In, 0),
            () => epoll.Modify(pair.LocalFd, EpollEvents.In, 0),
            () => epoll.Delete(pair.LocalFd),
            () => epoll.Add(pair.Local.SafeHandle, EpollEvents.In, 0),
            () => epoll.Modify(pair.Local.SafeHandle, EpollEvents.In, 0),
            () => epoll.Delete(pair.Local.SafeHandle),
            () => epoll.TryAdd(pair.LocalFd, EpollEvents.In, 0, out _),
            () => epoll.TryModify(pair.LocalFd, EpollEvents.In, 0, out _),
            () => epoll.TryDelete(pair.LocalFd, out _),
            () => epoll.Wait(buffer, 0),
            () => epoll.Wait(buffer, TimeSpan.Zero),
            () => epoll.TryWait(buffer, 0, out _, out _),
        };
        foreach (var call in calls)
        {
            Assert.Throws<ObjectDisposedException>(call);
        }
    }

    [Fact]
    public void NullSafeHandleThrowsArgumentNull()
    {
        using var epoll = EpollHandle.Create();
        Assert.Equal("fd", Assert.Throws<ArgumentNullException>(() => epoll.Add(null!, EpollEvents.In, 0)).ParamName);
        Assert.Equal("fd", Assert.Throws<ArgumentNullException>(() => epoll.Modify(null!, EpollEvents.In, 0)).ParamName);
        Assert.Equal("fd", Assert.Throws<ArgumentNullException>(() => epoll.Delete((SafeHandle)null!)).ParamName);
    }

    [Fact]
    public void InvalidSafeHandleThrowsArgumentNamingFd()
    {
        using var epoll = EpollHandle.Create();
        using var invalid = new SafeFileHandle(new IntPtr(-1), ownsHandle: false);
        Assert.Equal("fd", Assert.Throws<ArgumentException>(() => epoll.Add(invalid, EpollEvents.In, 0)).ParamName);
        Assert.Equal("fd", Assert.Throws<ArgumentException>(() => epoll.Modify(invalid, EpollEvents.In, 0)).ParamName);
        Assert.Equal("fd", Assert.Throws<ArgumentException>(() => epoll.Delete(invalid)).ParamName);
    }

    [Fact]
    public void DisposedSafeHandleArgumentThrowsObjectDisposed()
    {
        using var epoll = EpollHandle.Create();
        var efd = EventFdHandle.Create();
        efd.Dispose();
        Assert.Throws<ObjectDisposedException>(() => epoll.Add(efd, EpollEvents.In, 0));
        Assert.Throws<ObjectDisposedException>(() => epoll.Modify(efd, EpollEvents.In, 0));
        Assert.Throws<ObjectDisposedException>(() => epoll.Delete(efd));
    }

    [Fact]
    public void DisposedSocketHandleThrowsObjectDisposed()
    {
        // SafeSocketHandle reports itself invalid once closed; it must still count as disposed, not as an invalid argument.
        using var epoll = EpollHandle.Create();
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var handle = socket.SafeHandle;
        socket.Dispose();
        Assert.True(handle.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => epoll.Add(handle, EpollEvents.In, 0));
        Assert.Throws<ObjectDisposedException>(() => epoll.Modify(handle, EpollEvents.In, 0));
        Assert.Throws<ObjectDisposedException>(() => epoll.Delete(handle));
    }
}

/// <summary>Errors that need a closed descriptor number; run alone so the number is not reused meanwhile.</summary>
[Collection(FdNumberCollection.Name)]
public class EpollClosedNumberTests
{
    [Fact]
    public void ClosedDescriptorNumberIsEbadf()
    {
        using var epoll = EpollHandle.Create();
        var pair = SocketPair.CreateBlocking();
        int fd = pair.LocalFd;
        pair.Dispose();
        Assert.False(Fds.IsOpen(fd));
        var e = Assert.Throws<NativeCallException>(() => epoll.Add(fd, EpollEvents.In, 1));
        Assert.Equal(Interop.Errno.EBADF, e.Errno);
        Assert.Equal("EBADF", e.ErrorName);
        Assert.Equal($"epoll_ctl(EPOLL_CTL_ADD, fd {fd})", e.Operation);
        Assert.False(epoll.TryDelete(fd, out int errno));
        Assert.Equal(Interop.Errno.EBADF, errno);
    }

    [Fact]
    public void WaitOnAClosedEpollNumberIsEbadf()
    {
        // The only way to make epoll_wait itself fail: close the number under the handle.
        var epoll = EpollHandle.Create();
        int fd = epoll.FileDescriptor;
        Assert.Equal(0, Interop.Sys.close(fd));
        try
        {
            var buffer = new EpollEvent[1];
            Assert.False(epoll.TryWait(buffer, 0, out int count, out int errno));
            Assert.Equal(0, count);
            Assert.Equal(Interop.Errno.EBADF, errno);
            var e = Assert.Throws<NativeCallException>(() => epoll.Wait(buffer, 0));
            Assert.Equal("EBADF", e.ErrorName);
            Assert.Equal("epoll_wait", e.Operation);
        }
        finally
        {
            epoll.SetHandleAsInvalid(); // already closed: the handle must not close the number again
            epoll.Dispose();
        }
    }
}
