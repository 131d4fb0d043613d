using System.Globalization;
using System.Runtime.InteropServices;
using EpollSharp.Native;
using EpollSharp.Tests.Connections;

namespace EpollSharp.Tests.Reliability;

/// <summary>
/// Scenarios that run in a child process (see <see cref="ChildProcess"/>). Each prints <c>ok: what held</c> and
/// <c>info: figures</c> lines, and throws (printed as <c>fail:</c>, exit code 1) at the first check that does not hold.
/// A watchdog ends the child with exit code 3 after 60 s, so a hang cannot outlive the test.
/// </summary>
public static partial class ChildScenarios
{
    public static int Run(string scenario)
    {
        // Open the console streams now: .NET opens them on first use by duplicating 1 and 2, which fails without a free descriptor.
        Console.Out.Flush();
        Console.Error.Flush();
        var watchdog = new Thread(() =>
        {
            Thread.Sleep(60_000);
            Console.WriteLine("fail: watchdog: the scenario ran for more than 60 s");
            Console.Out.Flush();
            Environment.Exit(3);
        })
        { IsBackground = true };
        watchdog.Start();
        try
        {
            switch (scenario)
            {
                case "emfile":
                    DescriptorExhaustion(creations: true);
                    break;
                case "emfile-accept":
                    DescriptorExhaustion(creations: false);
                    break;
                default:
                    Console.WriteLine("fail: unknown scenario " + scenario);
                    return 2;
            }

            Console.WriteLine("done");
            return 0;
        }
        catch (Exception e)
        {
            Console.WriteLine("fail: " + e.ToString().Replace(Environment.NewLine, " | ", StringComparison.Ordinal));
            return 1;
        }
        finally
        {
            Console.Out.Flush();
        }
    }

    /// <summary>
    /// A loop with a listener and an established connection, in a process limited to a few hundred descriptors:
    /// 1. the process connects to itself until creating a socket fails with EMFILE; the listener meets EMFILE on accept
    ///    at the same time. The listener must pause (reason DescriptorLimit) without spinning, the established connection
    ///    must still be echoed, and the loop must report no exception;
    /// 2. half the clients, and two more, leave: accepting resumes by itself and a new client is echoed;
    /// 3. with exactly k descriptors free (k = 0..4), creating an EventLoop (2 descriptors), a listener (1, and a spare)
    ///    and a group of two loops (4) fails with a clear exception or succeeds, and afterwards exactly k are free again:
    ///    a creation that fails half-way gives back what it took;
    /// 4. everything is released: the process is back to the descriptors it had before the loop existed.
    /// Without <paramref name="creations"/> ("emfile-accept"), the creations of step 3 are left out: the run is about the listener.
    /// </summary>
    private static void DescriptorExhaustion(bool creations)
    {
        // Warm up: every assembly the scenario uses is loaded now (.NET keeps a loaded assembly's file open, and cannot
        // load one without a free descriptor), and the first group, listener and loop are made while there is room.
        using (var warm = new EventLoopGroup(2))
        {
            warm.Listen(new IPEndPoint(IPAddress.Loopback, 0), new PauseRecordingEcho(), new ListenerOptions { MaxConnections = 10 }, GroupAcceptMode.SingleAcceptor);
        }

        int before = Fds.CountOpen();
        string[] openAtStart = Fds.Describe();
        Info($"descriptor limit {ReadLimit()}, open at start {before}");
        var errors = new ConcurrentQueue<Exception>();
        var loop = new EventLoop(new EventLoopOptions { UnhandledExceptionHandler = errors.Enqueue });
        Task run = loop.Start();
        var handler = new PauseRecordingEcho();
        var options = new ListenerOptions
        {
            MaxConnections = 1_000_000, // far above the descriptor limit, so that accept really meets EMFILE
            AcceptRetryDelay = TimeSpan.FromMilliseconds(10),
            MaxAcceptRetryDelay = TimeSpan.FromMilliseconds(200),
        };
        ConnectionListener listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler, options);
        EndPoint endPoint = listener.LocalEndPoint;
        Socket control = EchoServer.ConnectTo(endPoint, 5000);
        EchoOnce(control, 1);

        // 1. Exhaust. The loop is held meanwhile, so that connections wait in the listen queue: when it goes on, the listener
        //    has connections to accept and no descriptor to accept them with.
        using var hold = new ManualResetEventSlim();
        using var held = new ManualResetEventSlim();
        loop.Post(() =>
        {
            held.Set();
            hold.Wait();
        });
        held.Wait();
        var clients = new List<Socket>();
        SocketException? failure = null;
        while (clients.Count < 100_000)
        {
            Socket socket;
            try
            {
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            }
            catch (SocketException e)
            {
                failure = e;
                break;
            }

            clients.Add(socket);
            socket.Connect(endPoint);
        }

        Check(failure?.SocketErrorCode == SocketError.TooManyOpenSockets, $"creating client socket {clients.Count + 1} fails with EMFILE (got {failure?.SocketErrorCode})");

        // One more connection that finds the table full. On io_uring's completion path the kernel accepts even while the
        // loop is held (a multishot accept runs in the loop thread's task work), and may have taken the last descriptor
        // itself: a client socket swapped for a new one then leaves a pending connection with no descriptor to accept it.
        // (A pending connection's accept may take the descriptor freed for it first: then free another.)
        for (int swapped = 0; ; swapped++)
        {
            clients[swapped].Dispose();
            try
            {
                clients[swapped] = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients[swapped].Connect(endPoint);
                break;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets && swapped < clients.Count - 1)
            {
                clients.RemoveAt(swapped--);
            }
        }
        hold.Set();
        Check(Resources.Eventually(() => handler.Paused.Any(e => e.Reason == AcceptPauseReason.DescriptorLimit), 10), "the listener met EMFILE on accept and paused (OnAcceptPaused, reason DescriptorLimit)");
        EchoOnce(control, 2);
        Ok("the loop still echoes an established connection while no descriptor is free");
        TimeSpan cpu0 = CpuTime();
        Thread.Sleep(1000);
        double share = (CpuTime() - cpu0).TotalSeconds;
        Info($"{clients.Count} client sockets; accepted {listener.AcceptedCount}, shed {listener.ShedCount}; process CPU over 1 s while exhausted: {share:P1} of a core");
        Check(share < 0.3, $"the process does not spin while out of descriptors with connections pending ({share:P1} of a core, bound 30 %)");
        Check(errors.IsEmpty, "no exception reached the loop: " + string.Join(" | ", errors));

        // 2. Recover. Half the clients leave, and two more. When the process ran out, nearly every client held one
        //    descriptor and its connection none (it waited in the listen queue); once the listener has accepted the
        //    connections of the clients that stay, each holds two. So with only half leaving, the table ends as full as it
        //    was (for an even count), and a new client, which needs two (its socket and the accepted one), found room only
        //    when the listener, out of descriptors again while it emptied its backlog, had shed the connection of a client
        //    that stays. On epoll it did often enough; on io_uring, whose kernel-side accept takes each descriptor the moment
        //    it is freed, it often did not, and the new client was shed again and again with the table full of live
        //    connections. The two extra leavers make that room.
        int leaving = Math.Min(clients.Count, clients.Count / 2 + 2);
        foreach (Socket socket in clients.Take(leaving))
        {
            socket.Dispose();
        }

        clients.RemoveRange(0, leaving);
        Check(Resources.Eventually(() => !handler.Resumed.IsEmpty, 10), "accepting resumed by itself once descriptors were free (OnAcceptResumed)");
        AcceptPauseEpisode episode = handler.Resumed.First();
        Info($"pause episode: {episode.Reason}, {episode.Retries} retries, {episode.ShedConnections} shed, {episode.Duration.TotalMilliseconds:F0} ms");
        // The descriptors freed above are taken again at once by the listener, which now accepts the connections that
        // waited in its backlog (those of closed clients are closed again on their end of stream): a new socket of our
        // own may find the table full for a moment, so wait for one to come free rather than race the listener.
        // The new client's own socket may take the last free descriptor, so that the listener, out of them again, sheds
        // its connection (a reset): then the client tries again, as a real one would.
        bool connected = false;
        int shedOrRefused = 0;
        Check(Resources.Eventually(() =>
        {
            Socket fresh;
            try
            {
                fresh = EchoServer.ConnectTo(endPoint, 5000);
                connected = true;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
            {
                return false;
            }

            using (fresh)
            {
                try
                {
                    EchoOnce(fresh, 3);
                    return true;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
                {
                    shedOrRefused++;
                    return false;
                }
            }
        }, 10) || Diagnose(listener, handler, shedOrRefused, clients), "a descriptor came free for a new client after the recovery");
        Info($"new clients shed before one was served: {shedOrRefused} (connected: {connected}); listener: accepted {listener.AcceptedCount}, shed {listener.ShedCount} in all, open {listener.ConnectionCount}; descriptors: {DescriptorKinds()}");
        Ok("a new client is echoed after the recovery");
        foreach (Socket socket in clients)
        {
            socket.Dispose();
        }

        clients.Clear();
        Check(Resources.Eventually(() => listener.ConnectionCount == 1, 10), $"only the control connection is left ({listener.ConnectionCount})");

        // 3. Creations that fail half-way give back what they took. A thread cannot start without a free descriptor
        //    either (.NET throws OutOfMemoryException from Thread.Start), so a group also needs room for its threads.
        var fillers = new List<Socket>();
        Fill(fillers);
        (string, int, Func<IDisposable>)[] creationCases = new (string, int, Func<IDisposable>)[]
        {
            ("new EventLoop()", 2, () => new EventLoop()),
            ("ConnectionListener.Listen", 1, () => ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler)),
            ("new EventLoopGroup(2)", 8, () => new EventLoopGroup(2)),
        };
        foreach ((string what, int needs, Func<IDisposable> create) in creations ? creationCases : Array.Empty<(string, int, Func<IDisposable>)>())
        {
            for (int free = 0; free <= needs; free++)
            {
                Release(fillers, free);
                string outcome;
                try
                {
                    IDisposable created = create();
                    created.Dispose();
                    outcome = "created";
                }
                catch (NativeCallException e) when (e.Errno == 24)
                {
                    outcome = "NativeCallException: " + e.Message;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
                {
                    outcome = "SocketException: " + e.SocketErrorCode;
                }
                catch (OutOfMemoryException e)
                {
                    outcome = "OutOfMemoryException (a thread could not start): " + e.Message;
                }

                // A listener closes its socket on its loop thread (Dispose does not wait), so allow it a moment.
                int freeAfter = FillWaiting(fillers, free);
                Check(freeAfter == free, $"{what} with {free} free descriptor(s): {outcome}; {freeAfter} free afterwards");
                if (free == needs)
                {
                    Check(outcome == "created", $"{what} succeeds with {free} free descriptors");
                }
            }
        }

        // A registration needs no descriptor.
        Release(fillers, 0);
        Socket last = fillers[^1];
        last.Blocking = false;
        Registration registration = loop.Register(last, Interest.Readable, static (_, _) => { });
        registration.Dispose();
        Ok("Register works with no descriptor free");

        // 4. Release everything.
        foreach (Socket socket in fillers)
        {
            socket.Dispose();
        }

        EchoOnce(control, 4);
        control.Dispose();
        listener.Dispose();
        loop.Dispose();
        Check(run.Wait(TimeSpan.FromSeconds(10)), "the loop stops");
        Check(errors.IsEmpty, "no exception reached the loop: " + string.Join(" | ", errors));
        // The library opens sockets, epoll instances and eventfds; the runtime may open pipes and assembly files of its own
        // on the way (first use of a code path): those are listed, not counted as leaks.
        string[] leaked = Array.Empty<string>();
        Resources.Eventually(
            () =>
            {
                leaked = Fds.Describe().Except(openAtStart).Where(IsLibraryKind).ToArray();
                return leaked.Length == 0;
            },
            10);
        Check(leaked.Length == 0, "no socket, epoll or eventfd descriptor is left of the scenario: " + string.Join(", ", leaked));
        Info($"{Fds.CountOpen()} descriptors open at the end, {before} at the start; opened by the runtime meanwhile: {string.Join(", ", Fds.Describe().Except(openAtStart).Where(d => !IsLibraryKind(d)))}");
    }

    private static bool Diagnose(ConnectionListener listener, PauseRecordingEcho handler, int shed, List<Socket> clients)
    {
        clients[^1].Dispose();
        clients.RemoveAt(clients.Count - 1);
        Info($"not served: paused {listener.IsAcceptPaused}, accepted {listener.AcceptedCount}, open {listener.ConnectionCount}, shed {listener.ShedCount}, pauses {handler.Paused.Count}, resumes {handler.Resumed.Count}, clients reset {shed}; descriptors: {DescriptorKinds()}");
        return false;
    }

    /// <summary>The open descriptors by kind ("socket=190 anon_inode:[eventfd]=1 ..."), files by path.</summary>
    private static string DescriptorKinds() =>
        string.Join(" ", Fds.Describe().Select(d => d.Substring(d.IndexOf("->", StringComparison.Ordinal) + 2))
            .GroupBy(d => d.StartsWith("anon_inode:", StringComparison.Ordinal) ? d : d.Split(':')[0]).Select(g => g.Key + "=" + g.Count()));

    private static bool IsLibraryKind(string descriptor) =>
        descriptor.Contains("socket:", StringComparison.Ordinal) || descriptor.Contains("eventpoll", StringComparison.Ordinal) || descriptor.Contains("eventfd", StringComparison.Ordinal);

    /// <summary>Opens sockets until the process has no descriptor left; returns how many it opened.</summary>
    private static int Fill(List<Socket> fillers)
    {
        int opened = 0;
        while (true)
        {
            try
            {
                fillers.Add(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
                opened++;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
            {
                return opened;
            }
        }
    }

    /// <summary>Like <see cref="Fill"/>, but waits up to 2 s for <paramref name="expected"/> descriptors to come free.</summary>
    private static int FillWaiting(List<Socket> fillers, int expected)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            int opened = Fill(fillers);
            if (opened >= expected || sw.ElapsedMilliseconds > 2000)
            {
                return opened;
            }

            Release(fillers, opened);
            Thread.Sleep(10);
        }
    }

    private static void Release(List<Socket> fillers, int count)
    {
        for (int i = 0; i < count; i++)
        {
            fillers[^1].Dispose();
            fillers.RemoveAt(fillers.Count - 1);
        }
    }

    private static void EchoOnce(Socket socket, byte value)
    {
        socket.Send(new[] { value });
        byte[] got = socket.ReceiveExactly(1);
        Check(got[0] == value, $"echo of {value}");
    }

    private static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException("check failed: " + what);
        }

        Ok(what);
    }

    private static void Ok(string what) => Console.WriteLine("ok: " + what);

    private static void Info(string what) => Console.WriteLine("info: " + what);

    private static string ReadLimit() =>
        System.IO.File.ReadAllLines("/proc/self/limits").FirstOrDefault(l => l.StartsWith("Max open files", StringComparison.Ordinal)) ?? "?";

    /// <summary>User + system CPU time of the process, from getrusage (which needs no descriptor).</summary>
    private static TimeSpan CpuTime()
    {
        Span<long> usage = stackalloc long[18];
        unsafe
        {
            fixed (long* p = usage)
            {
                if (getrusage(0, p) != 0)
                {
                    return TimeSpan.Zero;
                }
            }
        }

        // struct rusage starts with two struct timeval { long tv_sec; long tv_usec; }: user, then system.
        long micros = (usage[0] * 1_000_000) + usage[1] + (usage[2] * 1_000_000) + usage[3];
        return TimeSpan.FromTicks(micros * 10);
    }

    [LibraryImport("libc.so.6", EntryPoint = "getrusage")]
    private static unsafe partial int getrusage(int who, long* usage);

    private sealed class PauseRecordingEcho : EchoHandler
    {
        public ConcurrentQueue<AcceptPauseEpisode> Paused { get; } = new();

        public ConcurrentQueue<AcceptPauseEpisode> Resumed { get; } = new();

        public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode) => Paused.Enqueue(episode);

        public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode) => Resumed.Enqueue(episode);
    }
}
