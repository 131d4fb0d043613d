using System;
using System.Collections.Concurrent;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Tests.Connections;

namespace EpollSharp.Tests.Reliability;

/// <summary>
/// Background echo clients that keep an echo server busy while a test does something nasty to it: each sends a random
/// message (1 byte to 16 KiB), reads the echo and compares it byte for byte, again and again, until stopped. They are the
/// "other connections" that must keep being served.
/// </summary>
public sealed class EchoTraffic
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task[] _clients;
    private long _roundTrips;
    private long _bytes;

    public EchoTraffic(EndPoint endPoint, int clients, int seed)
    {
        _clients = Enumerable.Range(0, clients).Select(i => Task.Run(() => RunClient(endPoint, seed + i))).ToArray();
    }

    public ConcurrentQueue<string> Failures { get; } = new();

    public long RoundTrips => Interlocked.Read(ref _roundTrips);

    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Waits until every client made at least <paramref name="roundTrips"/> more round trips in total (the server still serves).</summary>
    public void AssertProgress(long roundTrips, double seconds = 20)
    {
        long target = RoundTrips + roundTrips;
        Assert.True(Resources.Eventually(() => RoundTrips >= target || !Failures.IsEmpty, seconds), $"the echo clients made no progress: {RoundTrips} round trips");
        Assert.True(Failures.IsEmpty, "an echo client failed: " + string.Join(" | ", Failures));
    }

    /// <summary>Stops the clients (each closes its connection in an orderly way) and asserts none failed.</summary>
    public async Task StopAsync()
    {
        _stop.Cancel();
        Task all = Task.WhenAll(_clients);
        Assert.True(await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(30))) == all, "the echo clients did not stop within 30 s");
        Assert.True(Failures.IsEmpty, "an echo client failed: " + string.Join(" | ", Failures));
        Assert.True(RoundTrips > 0, "no round trip at all");
    }

    private async Task RunClient(EndPoint endPoint, int seed)
    {
        var rng = new Random(seed);
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(endPoint);
            var received = new byte[16 * 1024];
            while (!_stop.IsCancellationRequested)
            {
                var message = new byte[rng.Next(1, 16 * 1024 + 1)];
                rng.NextBytes(message);
                await socket.SendAllAsync(message);
                int total = 0;
                while (total < message.Length)
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                    int n = await socket.ReceiveAsync(received.AsMemory(total, message.Length - total), SocketFlags.None, timeout.Token);
                    if (n == 0)
                    {
                        throw new InvalidOperationException($"end of stream after {total} of {message.Length} bytes");
                    }

                    total += n;
                }

                if (!message.AsSpan().SequenceEqual(received.AsSpan(0, message.Length)))
                {
                    throw new InvalidOperationException($"the echo of a {message.Length}-byte message differs");
                }

                Interlocked.Increment(ref _roundTrips);
                Interlocked.Add(ref _bytes, message.Length);
            }

            socket.Shutdown(SocketShutdown.Send);
            using var last = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            int tail = await socket.ReceiveAsync(received.AsMemory(), SocketFlags.None, last.Token);
            if (tail != 0)
            {
                throw new InvalidOperationException("data after the last echo");
            }
        }
        catch (Exception e)
        {
            Failures.Enqueue($"client {seed}: {e.GetType().Name}: {e.Message}");
        }
    }
}
