using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A request that costs 200 ms of CPU: done through Offload, the other connections' echoes are not delayed by more
/// than 100 ms (the bound, generous for a shared 2-core machine); done inline on the loop, they are delayed by the whole
/// 200 ms (the control, which shows the measurement can see a stall).
/// </summary>
[Collection(TimingSensitive.Name)]
public class OffloadTests
{
    private const int WorkMs = 200;
    private const int MaxDelayMs = 100;
    private const int PingClients = 4;

    private readonly ITestOutputHelper _output;

    public OffloadTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Offloaded_CPU_work_does_not_delay_other_connections(EventLoopBackend backend)
    {
        (double worstRtt, double heavyMs) = Measure(backend, offload: true);
        _output.WriteLine($"offloaded: heavy reply after {heavyMs:F0} ms; worst echo round trip of the other clients meanwhile {worstRtt:F1} ms (bound {MaxDelayMs} ms)");
        Assert.InRange(heavyMs, WorkMs, 10_000);
        Assert.True(worstRtt < MaxDelayMs, $"an echo took {worstRtt:F1} ms while the work ran off the loop");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Control_inline_CPU_work_stalls_every_connection_of_the_loop(EventLoopBackend backend)
    {
        (double worstRtt, double heavyMs) = Measure(backend, offload: false);
        _output.WriteLine($"inline: heavy reply after {heavyMs:F0} ms; worst echo round trip meanwhile {worstRtt:F1} ms");
        Assert.True(worstRtt > WorkMs * 0.75, $"the inline work should have stalled the loop, worst round trip {worstRtt:F1} ms");
    }

    private static (double WorstRtt, double HeavyMs) Measure(EventLoopBackend backend, bool offload)
    {
        var handler = new HeavyRequestHandler(offload);
        using var server = new EchoServer(backend, handler);
        using Socket heavy = server.Connect();
        var pingers = Enumerable.Range(0, PingClients).Select(_ => server.Connect()).ToList();
        try
        {
            // Warm up: thread pool, JIT, first echoes.
            foreach (Socket p in pingers)
            {
                p.Send(new byte[] { 1 });
                p.ReceiveExactly(1);
            }

            double worst = 0;
            using var stop = new CancellationTokenSource();
            var threads = pingers.Select(p => new Thread(() =>
            {
                var one = new byte[] { 2 };
                while (!stop.IsCancellationRequested)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    p.Send(one);
                    p.ReceiveExactly(1);
                    double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    lock (pingers)
                    {
                        worst = Math.Max(worst, ms);
                    }

                    Thread.Sleep(2);
                }
            }) { IsBackground = true }).ToList();
            threads.ForEach(t => t.Start());
            Thread.Sleep(50);
            lock (pingers)
            {
                worst = 0;
            }

            var sw = Stopwatch.StartNew();
            heavy.Send(new byte[] { (byte)'H' });
            byte[] reply = heavy.ReceiveExactly(8);
            double heavyMs = sw.Elapsed.TotalMilliseconds;
            Assert.True(BitConverter.ToInt64(reply) > 0);
            Thread.Sleep(50);
            stop.Cancel();
            threads.ForEach(t => t.Join());
            server.AssertNoLoopErrors();
            lock (pingers)
            {
                return (worst, heavyMs);
            }
        }
        finally
        {
            pingers.ForEach(p => p.Dispose());
        }
    }

    /// <summary>Echoes, except that 'H' asks for 200 ms of CPU work whose 8-byte result is written back.</summary>
    private sealed class HeavyRequestHandler : ConnectionHandler
    {
        private readonly bool _offload;

        public HeavyRequestHandler(bool offload) => _offload = offload;

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            if (data[0] != (byte)'H')
            {
                connection.Write(data);
                return;
            }

            if (_offload)
            {
                connection.Offload(WorkMs, static ms => Burn(ms), static (c, _, result) => c.Write(BitConverter.GetBytes(result)));
            }
            else
            {
                connection.Write(BitConverter.GetBytes(Burn(WorkMs)));
            }
        }

        /// <summary>CPU work: spins for <paramref name="ms"/> milliseconds, counting.</summary>
        private static long Burn(int ms)
        {
            long count = 0;
            var sw = Stopwatch.StartNew();
            while (sw.ElapsedMilliseconds < ms)
            {
                count++;
            }

            return count;
        }
    }
}
