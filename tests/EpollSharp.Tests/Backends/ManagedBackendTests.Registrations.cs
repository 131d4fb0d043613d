using System.Diagnostics;
using System.IO;
using EpollSharp.Backends;

namespace EpollSharp.Tests.Backends;

// Hang-ups, registrations coming and going across threads, many registrations, and the allocation checks.
public sealed partial class ManagedBackendTests
{
    [Fact]
    public void Peer_half_close_is_reported_as_ReadClosed()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            if ((rd & Readiness.ReadClosed) != 0)
            {
                r.ChangeInterest(Interest.None);
            }
        });

        pair.Peer.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => (seen.Union & Readiness.ReadClosed) != 0, "ReadClosed");
        Assert.True((seen.Last & Readiness.Readable) != 0, seen.ToString());

        // Only our peer's side is shut: no hang-up, no error.
        Assert.True((seen.Union & (Readiness.Closed | Readiness.Error)) == 0, seen.ToString());
    }

    [Fact]
    public void Half_close_after_our_own_shutdown_is_a_full_hangup()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        pair.Local.Shutdown(SocketShutdown.Send);
        using Registration reg = h.Loop.Register(pair.Local, Interest.None, (r, rd) => seen.Add(rd));
        pair.Peer.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "Closed with an empty interest");
        Assert.Equal(Readiness.Closed, seen.First);
        Thread.Sleep(300);
        Assert.InRange(seen.Count, 1, 3);
    }

    [Fact]
    public void Peer_reset_with_empty_interest_is_delivered_a_bounded_number_of_times()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.None, (r, rd) => seen.Add(rd));
        h.Settle();

        pair.ResetPeer();
        LoopHarness.WaitUntil(() => seen.Count >= 1, "Closed/Error after a reset");
        Assert.True((seen.First & (Readiness.Closed | Readiness.Error)) != 0, seen.ToString());
        Assert.True((seen.Union & (Readiness.Readable | Readiness.Writable | Readiness.ReadClosed)) == 0, seen.ToString());

        // The hang-up persists; the loop latches it (edge) and the backend must not spin on it.
        Thread.Sleep(300);
        h.Settle();
        Assert.InRange(seen.Count, 1, 3);
    }

    [Fact]
    public void Peer_reset_with_readable_interest_reports_error_and_closed()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            r.Dispose();
        });

        pair.ResetPeer();
        LoopHarness.WaitUntil(() => seen.Count >= 1, "the reset");
        Assert.Equal(Readiness.Readable | Readiness.ReadClosed | Readiness.Closed | Readiness.Error, seen.First);
    }

    [Fact]
    public void Socket_closed_while_registered_is_dropped_silently_and_its_number_can_be_reused()
    {
        var old = SocketPair.Create();
        using var h = StartLoop();
        int oldCalls = 0;
        Registration oldReg = h.Loop.Register(old.Local, Interest.Readable, (r, rd) => Interlocked.Increment(ref oldCalls));
        h.Settle();

        // Closed while the loop sleeps in a Select that includes it: Dispose must return, and no callback may come for it
        // (the kernel forgets a closed descriptor; the managed backend does the same).
        long oldNumber = old.Local.Handle.ToInt64();
        var disposer = new Thread(() => old.Local.Dispose());
        disposer.Start();
        Assert.True(disposer.Join(TimeSpan.FromSeconds(10)), "Socket.Dispose did not return");
        h.Settle(5, 100);
        Assert.Equal(0, Volatile.Read(ref oldCalls));

        // New sockets until one has the old number (usually the first), registered while the old registration still exists.
        var fresh = new List<SocketPair>();
        try
        {
            SocketPair reuse;
            do
            {
                reuse = SocketPair.Create();
                fresh.Add(reuse);
            }
            while (reuse.Local.Handle.ToInt64() != oldNumber && fresh.Count < 8);

            var seen = new ReadinessLog();
            using Registration freshReg = h.Loop.Register(reuse.Local, Interest.Readable, (r, rd) =>
            {
                seen.Add(rd);
                reuse.Drain();
            });
            oldReg.Dispose();
            reuse.Peer.Send(OneByte);
            LoopHarness.WaitUntil(() => seen.Count >= 1, $"the new socket (number {reuse.Local.Handle}, old {oldNumber})");
            Assert.Equal(0, Volatile.Read(ref oldCalls));
            Assert.Equal(1, h.Loop.RegistrationCount);
        }
        finally
        {
            fresh.ForEach(p => p.Dispose());
            old.Dispose();
        }
    }

    [Fact]
    public void Disposing_the_registration_then_the_socket_from_another_thread_closes_gracefully()
    {
        // .NET's Socket.Dispose resets the connection when another thread holds a reference on the socket at that moment
        // (as a Select does). Remove therefore returns only once the loop no longer uses the socket: the peer sees end of
        // stream, not a reset, although the loop was asleep in a Select on it.
        using var h = StartLoop();
        using IdleRegistrations idleSockets = IdleRegistrations.Register(h.Loop, 100);
        for (int round = 0; round < 20; round++)
        {
            using var pair = SocketPair.Create();
            Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => pair.Drain());
            h.Settle(1, 5);
            reg.Dispose();
            pair.Local.Dispose();
            pair.Peer.ReceiveTimeout = 5000;
            int n = pair.Peer.Receive(new byte[4], 0, 4, SocketFlags.None, out SocketError error);
            Assert.True(error == SocketError.Success && n == 0, $"round {round}: the peer saw {error} instead of end of stream");
        }
    }

    [Fact]
    public void A_thousand_registrations_are_all_delivered()
    {
        const int count = 1000;
        var pairs = new SocketPair[count];
        var regs = new Registration[count];
        var seen = new int[count];
        int distinct = 0;
        using var h = StartLoop(maxEvents: 64);
        try
        {
            for (int i = 0; i < count; i++)
            {
                pairs[i] = SocketPair.Create();
                regs[i] = h.Loop.Register(pairs[i].Local, Interest.Readable, (r, rd) =>
                {
                    int index = (int)r.State!;
                    pairs[index].Drain();
                    if (Interlocked.Increment(ref seen[index]) == 1)
                    {
                        Interlocked.Increment(ref distinct);
                    }
                }, state: i);
            }

            h.Settle();
            for (int i = 0; i < count; i++)
            {
                pairs[i].Peer.Send(OneByte);
            }

            LoopHarness.WaitUntil(() => Volatile.Read(ref distinct) == count, $"all {count} registrations (got {Volatile.Read(ref distinct)})", seconds: 30);

            // Every byte was drained in its first callback, so nobody is called twice for it.
            h.Settle();
            Assert.All(seen, n => Assert.Equal(1, n));

            // A second round lands while the loop sleeps spread over helper threads.
            for (int i = count - 1; i >= 0; i -= 7)
            {
                pairs[i].Peer.Send(OneByte);
            }

            LoopHarness.WaitUntil(() => seen[count - 1] == 2 && seen[count - 1 - (7 * 100)] == 2, "the second round");
        }
        finally
        {
            foreach (Registration r in regs)
            {
                r?.Dispose();
            }

            foreach (SocketPair p in pairs)
            {
                p?.Dispose();
            }
        }
    }

    [Fact]
    public void Plain_socket_handle_is_watched_and_a_file_handle_is_refused()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        var seen = new ReadinessLog();
        using Registration reg = h.Loop.RegisterHandle(pair.Local.SafeHandle, Interest.Readable, (r, rd) =>
        {
            seen.Add(rd);
            pair.Drain();
        });
        pair.Peer.Send(OneByte);
        LoopHarness.WaitUntil(() => seen.Count >= 1, "readable through a plain handle");
        Assert.Equal(Readiness.Readable, seen.First);

        // Half-close through a plain handle: readable with nothing buffered is end of stream.
        pair.Peer.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => (seen.Union & Readiness.ReadClosed) != 0, "ReadClosed through a plain handle");
        reg.Dispose();

        // The wrapper the backend used did not close or shut the socket.
        pair.Local.Send(OneByte);
        Assert.Equal(1, pair.Peer.Receive(new byte[4]));

        string path = Path.GetTempFileName();
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
            var ex = Assert.Throws<ArgumentException>(() => h.Loop.RegisterHandle(file.SafeFileHandle, Interest.Readable, (r, rd) => { }));
            Assert.Equal("handle", ex.ParamName);
            Assert.Equal(0, h.Loop.RegistrationCount);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void The_same_socket_cannot_be_registered_twice()
    {
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) => { });
        var ex = Assert.Throws<ArgumentException>(() => h.Loop.Register(pair.Local, Interest.Writable, (r, rd) => { }));
        Assert.Equal("handle", ex.ParamName);
        Assert.Equal(1, h.Loop.RegistrationCount);
    }

    [Fact]
    public void Listener_readiness_is_reported_for_a_pending_connection()
    {
        using var listener = new Socket(System.Net.Sockets.AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen(8);
        listener.Blocking = false;
        using var h = StartLoop();
        var accepted = new List<Socket>();
        using Registration reg = h.Loop.Register(listener, Interest.Readable, (r, rd) =>
        {
            while (true)
            {
                try
                {
                    accepted.Add(listener.Accept());
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    return;
                }
            }
        });

        using var client = new Socket(System.Net.Sockets.AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        LoopHarness.WaitUntil(() => h.Invoke(() => accepted.Count) == 1, "the accepted connection");
        h.Invoke(() => accepted.ForEach(s => s.Dispose()));
    }

    [Fact]
    public void Steady_state_waits_allocate_nothing_on_the_loop_thread()
    {
        // Busy: a level-triggered socket that is never drained, so every iteration is a wait that returns at once,
        // with 100 idle registrations scanned on every wait.
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        using IdleRegistrations idleSockets = IdleRegistrations.Register(h.Loop, 100);
        long[] marks = new long[2];
        int iterations = 0;
        var done = new ManualResetEventSlim();
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            int n = ++iterations;
            if (n == 2000)
            {
                marks[0] = GC.GetAllocatedBytesForCurrentThread();
            }
            else if (n == 12000)
            {
                marks[1] = GC.GetAllocatedBytesForCurrentThread();
                r.ChangeInterest(Interest.None);
                done.Set();
            }
        });
        pair.Peer.Send(OneByte);
        Assert.True(done.Wait(TimeSpan.FromSeconds(60)), "the busy loop did not finish");
        Assert.Equal(0, marks[1] - marks[0]);
    }

    [Fact]
    public void Blocking_waits_allocate_nothing_on_the_loop_thread_also_with_helper_threads()
    {
        // Idle: each round trip is a blocking wait that the peer's byte ends. 200 idle registrations need helper threads.
        using var pair = SocketPair.Create();
        using var h = StartLoop();
        using IdleRegistrations idleSockets = IdleRegistrations.Register(h.Loop, 200);
        long[] marks = new long[2];
        int rounds = 0;
        var echo = new byte[16];
        using Registration reg = h.Loop.Register(pair.Local, Interest.Readable, (r, rd) =>
        {
            int got = pair.Local.Receive(echo, 0, echo.Length, SocketFlags.None, out SocketError error);
            if (error != SocketError.Success || got == 0)
            {
                return;
            }

            int n = ++rounds;
            if (n == 300)
            {
                marks[0] = GC.GetAllocatedBytesForCurrentThread();
            }
            else if (n == 1300)
            {
                marks[1] = GC.GetAllocatedBytesForCurrentThread();
            }

            pair.Local.Send(echo, 0, got, SocketFlags.None, out _);
        });

        var buffer = new byte[16];
        for (int i = 0; i < 1300; i++)
        {
            pair.Peer.Send(OneByte);
            Assert.Equal(1, pair.Peer.Receive(buffer));
        }

        LoopHarness.WaitUntil(() => Volatile.Read(ref rounds) == 1300, "all round trips");
        Assert.Equal(0, marks[1] - marks[0]);
    }
}
