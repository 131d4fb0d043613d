using EpollSharp.Tests.Connections;

namespace EpollSharp.Tests.Reliability;

/// <summary>
/// Background echo clients that keep an echo server busy while a test does something nasty to it: each sends a random
/// message (1 byte to 16 KiB), reads the echo and compares it byte for byte, again and again, until stopped. They are the
/// "other connections" that must keep being served. Each runs on a thread of its own with blocking calls: async clients
/// in the test host depend on the thread pool, which on a 2-core machine can stall them for the half second it takes to
/// add a thread, long enough to look idle to a server with a short idle timeout.
/// </summary>
public sealed class EchoTraffic
{
    private readonly Thread[] _clients;
    private volatile bool _stop;
    private long _roundTrips;
    private long _bytes;

    public EchoTraffic(EndPoint endPoint, int clients, int seed)
    {
        _clients = Enumerable.Range(0, clients).Select(i => new Thread(() => RunClient(endPoint, seed + i)) { IsBackground = true, Name = "echo client " + i }).ToArray();
        foreach (Thread client in _clients)
        {
            client.Start();
        }
    }

    public ConcurrentQueue<string> Failures { get; } = new();

    public long RoundTrips => Interlocked.Read(ref _roundTrips);

    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Waits until the clients made at least <paramref name="roundTrips"/> more round trips in total (the server still serves).</summary>
    public void AssertProgress(long roundTrips, double seconds = 20)
    {
        long target = RoundTrips + roundTrips;
        Assert.True(Resources.Eventually(() => RoundTrips >= target || !Failures.IsEmpty, seconds), $"the echo clients made no progress: {RoundTrips} round trips");
        Assert.True(Failures.IsEmpty, "an echo client failed: " + string.Join(" | ", Failures));
    }

    /// <summary>Stops the clients (each closes its connection in an orderly way) and asserts none failed.</summary>
    public Task StopAsync()
    {
        _stop = true;
        foreach (Thread client in _clients)
        {
            Assert.True(client.Join(TimeSpan.FromSeconds(30)), "an echo client did not stop within 30 s");
        }

        Assert.True(Failures.IsEmpty, "an echo client failed: " + string.Join(" | ", Failures));
        Assert.True(RoundTrips > 0, "no round trip at all");
        return Task.CompletedTask;
    }

    private void RunClient(EndPoint endPoint, int seed)
    {
        var rng = new Random(seed);
        try
        {
            using Socket socket = EchoServer.ConnectTo(endPoint, receiveTimeoutMs: 20_000);
            var received = new byte[16 * 1024];
            while (!_stop)
            {
                var message = new byte[rng.Next(1, 16 * 1024 + 1)];
                rng.NextBytes(message);
                socket.Send(message);
                int total = 0;
                while (total < message.Length)
                {
                    int n = socket.Receive(received, total, message.Length - total, SocketFlags.None);
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
            if (socket.Receive(received) != 0)
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
