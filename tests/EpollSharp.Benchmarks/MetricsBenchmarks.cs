using System;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks;
using BenchmarkDotNet.Attributes;
using EpollSharp.Connections;

namespace EpollSharp.Benchmarks;

/// <summary>
/// What the EpollSharp meter costs: the same work with no metrics listener and with one that enables every instrument
/// (as dotnet-counters or OpenTelemetry would), side by side. Dispatch: a full loop iteration with one readiness event.
/// Echo: a 64-byte round trip through a connection on a loop running on its own thread.
/// </summary>
[MemoryDiagnoser]
public class MetricsBenchmarks
{
    private const int Ops = 10_000;

    private MeterListener? _listener;
    private long _measurements;
    private EventLoop _loop = null!;
    private Socket _local = null!;
    private Socket _peer = null!;
    private Registration _registration = null!;
    private Countdown _countdown = null!;
    private EventLoop _echoLoop = null!;
    private Task _echoRun = null!;
    private ConnectionListener _echoListener = null!;
    private Socket _client = null!;
    private readonly byte[] _message = new byte[64];
    private readonly byte[] _echo = new byte[64];

    /// <summary>Whether a listener has every EpollSharp instrument enabled.</summary>
    [Params(false, true)]
    public bool Listening { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        if (Listening)
        {
            _listener = new MeterListener
            {
                InstrumentPublished = (instrument, listener) =>
                {
                    if (instrument.Meter.Name == "EpollSharp")
                    {
                        listener.EnableMeasurementEvents(instrument);
                    }
                },
            };
            _listener.SetMeasurementEventCallback<long>((_, _, _, _) => _measurements++);
            _listener.SetMeasurementEventCallback<int>((_, _, _, _) => _measurements++);
            _listener.SetMeasurementEventCallback<double>((_, _, _, _) => _measurements++);
            _listener.Start();
        }

        _loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Epoll });
        (_local, _peer) = Pair();
        _peer.Send(new byte[] { 1 }); // stays unread: level-triggered readable on every iteration
        _countdown = new Countdown(_loop);
        _registration = _loop.Register(_local, Interest.None, static (r, _) => ((Countdown)r.State!).Tick(), _countdown);

        _echoLoop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Epoll });
        _echoListener = ConnectionListener.Listen(_echoLoop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        _echoRun = _echoLoop.Start();
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        _client.Connect(_echoListener.LocalEndPoint);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _client.Dispose();
        _echoListener.Dispose();
        _echoLoop.Dispose();
        _echoRun.Wait();
        _loop.Dispose();
        _local.Dispose();
        _peer.Dispose();
        _listener?.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "dispatch one readiness event")]
    public void Dispatch()
    {
        _registration.ChangeInterest(Interest.Readable);
        _countdown.Reset(Ops);
        _loop.Run();
        _registration.ChangeInterest(Interest.None);
    }

    [Benchmark(OperationsPerInvoke = 1_000, Description = "echo 64 B through a connection (round trip)")]
    public void Echo64()
    {
        for (int i = 0; i < 1_000; i++)
        {
            _client.Send(_message);
            int got = 0;
            while (got < _echo.Length)
            {
                got += _client.Receive(_echo, got, _echo.Length - got, SocketFlags.None);
            }
        }
    }

    private static (Socket Local, Socket Peer) Pair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        peer.Connect(listener.LocalEndPoint!);
        Socket local = listener.Accept();
        local.Blocking = false;
        return (local, peer);
    }

    private sealed class Countdown
    {
        private int _left;

        public Countdown(EventLoop loop) => Loop = loop;

        public EventLoop Loop { get; }

        public void Reset(int count) => _left = count;

        public void Tick()
        {
            if (--_left == 0)
            {
                Loop.Stop();
            }
        }
    }

    private sealed class Echo : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
    }
}
