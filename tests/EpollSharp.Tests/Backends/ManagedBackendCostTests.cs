using System.Diagnostics;
using System.Globalization;
using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// Measures what a wait of the managed backend costs against the number of registrations (the table in
/// docs/backends-managed.md). Skipped unless <c>EPOLLSHARP_MEASURE=1</c>: it opens up to 8,000 descriptors and takes ~30 s.
/// </summary>
/// <remarks>
/// Run: <c>EPOLLSHARP_MEASURE=1 dotnet test tests/EpollSharp.Tests -f net10.0 -c Release --filter "FullyQualifiedName~ManagedBackendCost" --logger "console;verbosity=detailed"</c>
/// </remarks>
[Collection(ManagedEnvironmentCollection.Name)]
public sealed class ManagedBackendCostTests
{
    private static readonly int[] IdleCounts = { 10, 100, 1000, 4000 };

    private readonly ITestOutputHelper _output;

    public ManagedBackendCostTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Cost_per_wait_against_the_number_of_registrations()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("EPOLLSHARP_MEASURE") == "1", "Set EPOLLSHARP_MEASURE=1 to measure.");

        _output.WriteLine("| idle registrations | managed: busy wait (µs) | managed: round trip (µs) | watcher threads | epoll: round trip (µs) | managed: bytes allocated per wait |");
        _output.WriteLine("|---:|---:|---:|---:|---:|---:|");
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1024);
        foreach (int idle in IdleCounts)
        {
            var pairs = new List<(Socket Local, Socket Peer)>();
            try
            {
                for (int i = 0; i <= idle; i++)
                {
                    pairs.Add(Connect(listener));
                }

                // The best of three runs each: the machine is shared, and interference only ever adds time.
                (Socket local, Socket peer) = pairs[idle];
                double busy = double.MaxValue, allocated = 0, managedTrip = double.MaxValue, epollTrip = double.MaxValue;
                int watchers = 0;
                for (int run = 0; run < 3; run++)
                {
                    (double b, double a, int w) = BusyWait(pairs, local, peer);
                    busy = Math.Min(busy, b);
                    allocated = Math.Max(allocated, a);
                    watchers = w;
                    managedTrip = Math.Min(managedTrip, RoundTrip(EventLoopBackend.Managed, pairs, local, peer));
                    epollTrip = BackendFactory.IsAvailable(EventLoopBackend.Epoll, out _)
                        ? Math.Min(epollTrip, RoundTrip(EventLoopBackend.Epoll, pairs, local, peer))
                        : double.NaN;
                }

                _output.WriteLine(string.Format(
                    CultureInfo.InvariantCulture,
                    "| {0:N0} | {1:F1} | {2:F1} | {3} | {4:F1} | {5:F0} |",
                    idle,
                    busy,
                    managedTrip,
                    watchers,
                    epollTrip,
                    allocated));
            }
            finally
            {
                foreach ((Socket a, Socket b) in pairs)
                {
                    a.Dispose();
                    b.Dispose();
                }
            }
        }
    }

    /// <summary>The backend alone: one level-triggered socket always readable, so every wait scans everything and returns at once.</summary>
    private static (double Microseconds, double BytesPerWait, int Watchers) BusyWait(List<(Socket Local, Socket Peer)> pairs, Socket local, Socket peer)
    {
        using var backend = new ManagedBackend(256);
        var events = new BackendEvent[256];
        for (int i = 0; i < pairs.Count; i++)
        {
            backend.Add(new BackendTarget(pairs[i].Local.SafeHandle, pairs[i].Local), (ulong)i, Interest.Readable, TriggerMode.Level);
        }

        // One blocking wait first, so the helper threads exist, as they would in a loop that sleeps.
        backend.Wait(events, 5);
        peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => local.Available > 0, "the byte");
        int waits = pairs.Count > 1000 ? 300 : 3000;
        for (int i = 0; i < waits / 10; i++)
        {
            Assert.Equal(1, backend.Wait(events, -1));
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < waits; i++)
        {
            backend.Wait(events, -1);
        }

        sw.Stop();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(1, local.Receive(new byte[4]));
        for (int i = 0; i < pairs.Count; i++)
        {
            backend.Remove(new BackendTarget(pairs[i].Local.SafeHandle, pairs[i].Local));
        }

        return (sw.Elapsed.TotalMilliseconds * 1000 / waits, (double)allocated / waits, backend.WatcherCount);
    }

    /// <summary>Through the loop: the peer sends a byte, the callback echoes it, the peer reads it. Every wait sleeps.</summary>
    private static double RoundTrip(EventLoopBackend kind, List<(Socket Local, Socket Peer)> pairs, Socket local, Socket peer)
    {
        using var h = new LoopHarness(new EventLoop(new EventLoopOptions { Backend = kind }));
        var regs = new List<Registration>();
        try
        {
            var echo = new byte[16];
            for (int i = 0; i < pairs.Count - 1; i++)
            {
                regs.Add(h.Loop.Register(pairs[i].Local, Interest.Readable, static (r, rd) => { }));
            }

            regs.Add(h.Loop.Register(local, Interest.Readable, (r, rd) =>
            {
                int n = local.Receive(echo, 0, echo.Length, SocketFlags.None, out SocketError error);
                if (error == SocketError.Success && n > 0)
                {
                    local.Send(echo, 0, n, SocketFlags.None, out _);
                }
            }));

            var one = new byte[] { 1 };
            var buffer = new byte[16];
            int trips = pairs.Count > 1000 ? 200 : 2000;
            for (int i = 0; i < trips / 10; i++)
            {
                peer.Send(one);
                peer.Receive(buffer);
            }

            var sw = Stopwatch.StartNew();
            for (int i = 0; i < trips; i++)
            {
                peer.Send(one);
                peer.Receive(buffer);
            }

            sw.Stop();
            return sw.Elapsed.TotalMilliseconds * 1000 / trips;
        }
        finally
        {
            regs.ForEach(r => r.Dispose());
        }
    }

    private static (Socket Local, Socket Peer) Connect(Socket listener)
    {
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 10_000 };
        peer.Connect(listener.LocalEndPoint!);
        Socket local = listener.Accept();
        local.Blocking = false;
        local.NoDelay = true;
        return (local, peer);
    }
}
