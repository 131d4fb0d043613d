using System;
using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;

namespace EpollSharp.Benchmarks;

/// <summary>
/// The event loop's steady state, per operation: dispatching one readiness event, posting with state, re-arming a
/// timer, registration create/modify/dispose. Every steady-state row should show 0 B allocated.
/// </summary>
[MemoryDiagnoser]
public class LoopBenchmarks
{
    private const int Ops = 10_000;

    private EventLoop _loop = null!;
    private Socket _local = null!;
    private Socket _peer = null!;
    private Socket _spare = null!;
    private Registration _registration = null!;
    private Counter _counter = null!;
    private Action<object?> _repost = null!;
    private LoopTimer _timer = null!;

    [Params(EventLoopBackend.Epoll)]
    public EventLoopBackend Backend { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _loop = new EventLoop(new EventLoopOptions { Backend = Backend });
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _peer.Connect(listener.LocalEndPoint!);
        _local = listener.Accept();
        _local.Blocking = false;
        _spare = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        _peer.Send(new byte[] { 1 }); // stays unread: level-triggered readable on every iteration
        _counter = new Counter(_loop);
        _registration = _loop.Register(_local, Interest.None, static (r, _) => ((Counter)r.State!).Tick(), _counter);
        _repost = static state =>
        {
            var c = (Counter)state!;
            if (c.Tick())
            {
                c.Loop.Post(c.Repost!, c);
            }
        };
        _counter.Repost = _repost;
        _timer = _loop.Schedule(TimeSpan.FromDays(1), static t =>
        {
            if (((Counter)t.State!).Tick())
            {
                t.Change(TimeSpan.Zero);
            }
        }, _counter);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _loop.Dispose();
        _local.Dispose();
        _peer.Dispose();
        _spare.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "dispatch one readiness event")]
    public void Dispatch()
    {
        _registration.ChangeInterest(Interest.Readable);
        _counter.Reset(Ops);
        _loop.Run();
        _registration.ChangeInterest(Interest.None);
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "post with state and run it")]
    public void Post()
    {
        _counter.Reset(Ops);
        _loop.Post(_repost, _counter);
        _loop.Run();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "re-arm a timer and fire it")]
    public void Timer()
    {
        _counter.Reset(Ops);
        _timer.Change(TimeSpan.Zero);
        _loop.Run();
    }

    [Benchmark(Description = "ChangeInterest (epoll_ctl MOD)")]
    public void ChangeInterest() => _registration.ChangeInterest(Interest.None);

    [Benchmark(Description = "Register + Dispose")]
    public void RegisterDispose() => _loop.Register(_spare, Interest.None, static (_, _) => { }).Dispose();

    private sealed class Counter
    {
        private int _left;

        public Counter(EventLoop loop) => Loop = loop;

        public EventLoop Loop { get; }

        public Action<object?>? Repost { get; set; }

        public void Reset(int count) => _left = count;

        public bool Tick()
        {
            if (--_left <= 0)
            {
                Loop.Stop();
                return false;
            }

            return true;
        }
    }
}
