using System;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using EpollSharp.Native;

namespace EpollSharp.Benchmarks;

/// <summary>The raw binding: one epoll_wait with zero timeout, and epoll_ctl add/modify/delete.</summary>
public class InteropBenchmarks
{
    private readonly EpollEvent[] _events = new EpollEvent[64];
    private EpollHandle _epoll = null!;
    private Socket _socket = null!;
    private int _fd;

    [GlobalSetup]
    public void Setup()
    {
        _epoll = EpollHandle.Create();
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _fd = (int)_socket.Handle;
        _epoll.Add(_fd, EpollEvents.In, 1);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _epoll.Dispose();
        _socket.Dispose();
    }

    [Benchmark(Description = "epoll_wait, timeout 0")]
    public int WaitZeroTimeout() => _epoll.Wait(_events, 0);

    [Benchmark(Description = "epoll_ctl MOD")]
    public void Modify() => _epoll.Modify(_fd, EpollEvents.In | EpollEvents.Out, 1);

    [Benchmark(Description = "epoll_ctl ADD + DEL")]
    public void AddDelete()
    {
        _epoll.Delete(_fd);
        _epoll.Add(_fd, EpollEvents.In, 1);
    }
}
