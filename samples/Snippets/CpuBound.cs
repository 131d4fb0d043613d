using System;
using System.Linq;
using System.Net.Sockets;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>CPU-bound work and the loop: compute on the thread pool, touch sockets on the loop.</summary>
/// <remarks>
/// The protocol: the client sends one byte k; the server answers with the number of primes below k * 100,000
/// (four bytes, in the machine's byte order: both ends use BitConverter). Meanwhile a repeating timer on the loop counts ticks: they keep coming while
/// the primes are being counted, because the counting is not on the loop thread.
/// </remarks>
internal static class CpuBound
{
    public static void Run() => RunWith(OnRequest);

    public static void RunAwait() => RunWith(OnRequestAsync);

    private static void RunWith(ReadinessCallback callback)
    {
        (Socket server, Socket client) = Loopback.Pair();
        using (client)
        using (server)
        {
            using var loop = new EventLoop();
            int ticks = 0;
            using LoopTimer ticker = loop.ScheduleRepeating(TimeSpan.FromMilliseconds(5), TimeSpan.FromMilliseconds(5), _ => ticks++);
            Registration registration = loop.Register(server, Interest.Readable, callback);
            Task stopped = loop.Start();

            client.Send([30]);                                   // primes below 3,000,000
            var answer = new byte[4];
            for (int got = 0; got < 4;)
            {
                int n = client.Receive(answer, got, 4 - got, SocketFlags.None);
                Program.Check(n > 0, "an answer arrived");
                got += n;
            }

            int primes = BitConverter.ToInt32(answer, 0);
            loop.Stop();
            stopped.Wait();
            registration.Dispose();
            Console.WriteLine($"primes below 3,000,000: {primes}; the loop ticked {ticks} times meanwhile");
            Program.Check(primes == 216_816, "the right count");
        }
    }

    /// <summary>The callback budget: a callback that computes on the loop is reported while it runs and when it returns.</summary>
    public static void RunWatchdog()
    {
        var reports = new System.Collections.Concurrent.ConcurrentQueue<string>();

        #region callback-budget
        using var loop = new EventLoop(new EventLoopOptions { CallbackBudget = TimeSpan.FromMilliseconds(50) });
        loop.SlowCallback += (_, e) =>
        {
            // Once from the watchdog thread while the callback still runs, once on the loop thread when it returns.
            // Keep it short: log it (e.ToString() is one line), count it, never block here.
            Console.Error.WriteLine(e);
            reports.Enqueue($"{e.Kind} {e.Target} ended={e.HasEnded}");
        };
        #endregion

        Task stopped = loop.Start();
        loop.Post(static state => System.Threading.Thread.Sleep((int)state!), 300);   // the mistake: blocking the loop for 300 ms
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!reports.Contains("PostedWork 300 ended=True") && sw.Elapsed < TimeSpan.FromSeconds(20))
        {
            System.Threading.Thread.Sleep(10);
        }

        loop.Stop();
        stopped.Wait();
        Program.Check(reports.Contains("PostedWork 300 ended=True"), "the blocked loop was reported when the callback returned");

        // The watchdog's report while it ran comes first, unless the machine held the watchdog thread back for 250 ms.
        Program.Check(reports.Count <= 2 && reports.All(r => r.StartsWith("PostedWork 300 ", StringComparison.Ordinal)), "only that callback was reported");
    }

    #region offload-post
    private static void OnRequest(Registration registration, Readiness readiness)
    {
        var request = new byte[1];
        int n = registration.Socket!.Receive(request, 0, 1, SocketFlags.None, out SocketError error);
        if (error == SocketError.WouldBlock)
        {
            return;
        }

        if (error != SocketError.Success || n == 0)
        {
            registration.Dispose();
            return;
        }

        // No further requests from this client until this one is answered.
        registration.ChangeInterest(Interest.None);

        int limit = request[0] * 100_000;
        Task.Run(() =>
        {
            int primes = CountPrimes(limit);                          // a thread-pool thread: the loop serves others meanwhile
            registration.Loop.Post(() => Reply(registration, primes)); // back to the loop thread for the socket
        });
    }
    #endregion

    #region offload-await
    // Run installs the loop's SynchronizationContext on the loop thread, so the code after an await
    // in a callback continues on the loop thread, as the code before it ran.
    private static async void OnRequestAsync(Registration registration, Readiness readiness)
    {
        var request = new byte[1];
        int n = registration.Socket!.Receive(request, 0, 1, SocketFlags.None, out SocketError error);
        if (error == SocketError.WouldBlock)
        {
            return;
        }

        if (error != SocketError.Success || n == 0)
        {
            registration.Dispose();
            return;
        }

        registration.ChangeInterest(Interest.None);
        int limit = request[0] * 100_000;
        int primes = await Task.Run(() => CountPrimes(limit));       // the loop goes on while this runs
        Reply(registration, primes);                                  // on the loop thread again
    }
    #endregion

    #region reply
    // On the loop thread: the only thread that touches the connection.
    private static void Reply(Registration registration, int primes)
    {
        if (registration.IsDisposed)
        {
            return;                                                   // closed while we were computing
        }

        byte[] answer = BitConverter.GetBytes(primes);
        registration.Socket!.Send(answer, 0, answer.Length, SocketFlags.None, out _);
        registration.ChangeInterest(Interest.Readable);               // ready for the next request
    }
    #endregion

    private static int CountPrimes(int limit)
    {
        var composite = new bool[limit];
        int count = 0;
        for (int i = 2; i < limit; i++)
        {
            if (composite[i])
            {
                continue;
            }

            count++;
            for (long j = (long)i * i; j < limit; j += i)
            {
                composite[j] = true;
            }
        }

        return count;
    }
}
