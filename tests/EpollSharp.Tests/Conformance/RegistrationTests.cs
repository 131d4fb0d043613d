using System.IO;

namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Registration lifecycle: disposal, descriptor reuse, many registrations, misuse.</summary>
public class RegistrationTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_registration_disposed_by_another_callback_in_the_same_batch_is_not_called(EventLoopBackend backend)
    {
        // Both sockets are readable before the loop runs, so one wait returns both events in one batch.
        using var a = SocketPair.Create();
        using var b = SocketPair.Create();
        using var loop = Backends.CreateLoop(backend);
        a.Peer.Send(new byte[] { 1 });
        b.Peer.Send(new byte[] { 1 });
        Thread.Sleep(50);

        var calls = new List<string>();
        Registration? ra = null, rb = null;
        ra = loop.Register(a.Local, Interest.Readable, (r, _) =>
        {
            calls.Add("a");
            rb!.Dispose();
            r.Dispose();
            loop.Stop();
        });
        rb = loop.Register(b.Local, Interest.Readable, (r, _) =>
        {
            calls.Add("b");
            ra!.Dispose();
            r.Dispose();
            loop.Stop();
        });
        loop.Run();

        Assert.Single(calls);
        Assert.True(ra.IsDisposed && rb.IsDisposed);
        Assert.Equal(0, loop.RegistrationCount);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_event_for_a_disposed_registration_never_reaches_a_new_one_on_the_same_descriptor_number(EventLoopBackend backend)
    {
        // Batch of two events: the first callback disposes the second registration, closes its socket, and registers
        // a new socket that gets the same descriptor number and the same slot; the stale event must not reach it.
        using var trigger = SocketPair.Create();
        var victim = SocketPair.Create();
        using var loop = Backends.CreateLoop(backend);
        trigger.Peer.Send(new byte[] { 1 });
        victim.Peer.Send(new byte[] { 1 });
        Thread.Sleep(50);

        int victimCalls = 0, newcomerCalls = 0, reused = 0;
        SocketPair? newcomer = null;
        Registration? victimReg = null;
        Registration? newcomerReg = null;
        loop.Register(trigger.Local, Interest.Readable, (r, _) =>
        {
            trigger.Drain();
            if (victimReg is { IsDisposed: false })
            {
                long oldFd = victim.Local.Handle.ToInt64();
                victimReg.Dispose();
                victim.Dispose();
                newcomer = SocketPair.Create();
                reused = newcomer.Local.Handle.ToInt64() == oldFd || newcomer.Peer.Handle.ToInt64() == oldFd ? 1 : 0;
                newcomerReg = loop.Register(newcomer.Local, Interest.None, (_, _) => newcomerCalls++);
                loop.Schedule(TimeSpan.FromMilliseconds(100), _ => loop.Stop());
            }
        });
        victimReg = loop.Register(victim.Local, Interest.Readable, (r, _) =>
        {
            victimCalls++;
            victim.Drain();
        });
        loop.Run();
        try
        {
            // Either the victim ran first (then its own callback ran once, legitimately) or the trigger ran first and disposed it.
            Assert.InRange(victimCalls, 0, 1);
            Assert.Equal(0, newcomerCalls);
            Assert.NotNull(newcomerReg);
            Assert.NotEqual(victimReg!.Token, newcomerReg!.Token);
        }
        finally
        {
            newcomer?.Dispose();
        }
    }

    [Fact]
    public void Tokens_carry_a_generation_so_a_reused_slot_gets_a_new_token()
    {
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);
        using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Epoll });
        using var a = SocketPair.Create();
        Registration first = loop.Register(a.Local, Interest.Readable, (_, _) => { });
        ulong firstToken = first.Token;
        first.Dispose();
        Registration second = loop.Register(a.Local, Interest.Readable, (_, _) => { });
        Assert.Equal((uint)firstToken, (uint)second.Token);
        Assert.NotEqual(firstToken >> 32, second.Token >> 32);
        second.Dispose();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Closing_a_socket_before_its_registration_stops_its_callbacks_and_spares_a_new_socket_with_the_same_number(EventLoopBackend backend)
    {
        // Documented behaviour: a socket closed before its registration is forgotten by the kernel; no callback comes
        // for it; changing its interest throws ObjectDisposedException; disposing the registration then leaves the
        // descriptor number alone, even when a new socket already has it.
        var old = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int oldCalls = 0;
        Registration oldReg = h.Invoke(() => h.Loop.Register(old.Local, Interest.Readable, (_, _) => Interlocked.Increment(ref oldCalls)));
        long oldFd = old.Local.Handle.ToInt64();
        old.Local.Dispose();
        old.Peer.Send(new byte[] { 1 });
        h.Settle(iterations: 5, sleepMs: 100);
        Assert.Equal(0, Volatile.Read(ref oldCalls));
        Assert.Throws<ObjectDisposedException>(() => oldReg.ChangeInterest(Interest.Writable));

        // A new socket, likely with the same descriptor number, registered while the old registration still exists.
        using var fresh = SocketPair.Create();
        int freshCalls = 0;
        Registration freshReg = h.Invoke(() => h.Loop.Register(fresh.Local, Interest.Readable, (r, _) =>
        {
            fresh.Drain();
            Interlocked.Increment(ref freshCalls);
        }));
        oldReg.Dispose();
        Assert.True(oldReg.IsDisposed);
        fresh.Peer.Send(new byte[] { 2 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref freshCalls) >= 1, $"the new socket (fd {fresh.Local.Handle}, old fd {oldFd}) is still watched after the old registration was disposed");
        Assert.Equal(0, Volatile.Read(ref oldCalls));
        h.Invoke(() => freshReg.Dispose());
        old.Peer.Dispose();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_thousand_registrations_are_all_delivered(EventLoopBackend backend)
    {
        const int count = 1000;
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(count);
        var pairs = new List<(Socket Local, Socket Peer)>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                peer.Connect(listener.LocalEndPoint!);
                Socket local = listener.Accept();
                local.Blocking = false;
                pairs.Add((local, peer));
            }

            using var h = new LoopHarness(Backends.CreateLoop(backend));
            var hits = new int[count];
            int distinct = 0;
            h.Invoke(() =>
            {
                for (int i = 0; i < count; i++)
                {
                    h.Loop.Register(pairs[i].Local, Interest.Readable, (r, _) =>
                    {
                        int index = (int)r.State!;
                        var buffer = new byte[16];
                        pairs[index].Local.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError _);
                        if (Interlocked.Increment(ref hits[index]) == 1)
                        {
                            Interlocked.Increment(ref distinct);
                        }

                        r.Dispose();
                    }, state: i);
                }
            });
            Assert.Equal(count, h.Invoke(() => h.Loop.RegistrationCount));
            foreach (var (_, peer) in pairs)
            {
                peer.Send(new byte[] { 7 });
            }

            LoopHarness.WaitUntil(() => Volatile.Read(ref distinct) == count, "a callback for each of 1,000 registrations", 30);
            Assert.All(hits, n => Assert.Equal(1, n));
            Assert.Equal(0, h.Invoke(() => h.Loop.RegistrationCount));
        }
        finally
        {
            foreach (var (local, peer) in pairs)
            {
                local.Dispose();
                peer.Dispose();
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_full_event_buffer_does_not_starve_sockets_or_delay_timers(EventLoopBackend backend)
    {
        // Eight level-triggered sockets that stay readable, a buffer of two events per wait, and a timer: every socket
        // keeps being served and the timer fires on time, because a full buffer makes the loop wait again at once.
        var pairs = new List<SocketPair>();
        for (int i = 0; i < 8; i++)
        {
            pairs.Add(SocketPair.Create());
            pairs[i].Peer.Send(new byte[] { 1 });
        }

        try
        {
            using var loop = Backends.CreateLoop(backend, maxEvents: 2);
            var counts = new int[8];
            for (int i = 0; i < 8; i++)
            {
                loop.Register(pairs[i].Local, Interest.Readable, (r, _) => counts[(int)r.State!]++, state: i);
            }

            var sw = System.Diagnostics.Stopwatch.StartNew();
            double firedAtMs = -1;
            loop.Schedule(TimeSpan.FromMilliseconds(50), _ =>
            {
                firedAtMs = sw.Elapsed.TotalMilliseconds;
                loop.Stop();
            });
            loop.Run();

            Assert.All(counts, c => Assert.True(c >= 2, $"each socket served repeatedly; counts: {string.Join(",", counts)}"));
            Assert.InRange(firedAtMs, 50, 50 + 1000);
        }
        finally
        {
            pairs.ForEach(p => p.Dispose());
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Misuse_gets_clear_exceptions(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        var loop = Backends.CreateLoop(backend);
        Registration reg = loop.Register(pair.Local, Interest.Readable, (_, _) => { });

        var twice = Assert.Throws<ArgumentException>(() => loop.Register(pair.Local, Interest.Readable, (_, _) => { }));
        Assert.Contains("already registered", twice.Message, StringComparison.Ordinal);

        Assert.Equal("socket", Assert.Throws<ArgumentNullException>(() => loop.Register(null!, Interest.Readable, (_, _) => { })).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loop.Register(pair.Peer, Interest.Readable, null!)).ParamName);
        Assert.Equal("interest", Assert.Throws<ArgumentOutOfRangeException>(() => reg.ChangeInterest((Interest)8)).ParamName);
        Assert.Equal("mode", Assert.Throws<ArgumentOutOfRangeException>(() => loop.Register(pair.Peer, Interest.Readable, (_, _) => { }, null, (TriggerMode)9)).ParamName);

        // The peer socket is blocking: registering it would let a callback stall the loop.
        pair.Peer.Blocking = true;
        Assert.Equal("socket", Assert.Throws<ArgumentException>(() => loop.Register(pair.Peer, Interest.Readable, (_, _) => { })).ParamName);

        var disposedSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        disposedSocket.Dispose();
        Assert.Throws<ObjectDisposedException>(() => loop.Register(disposedSocket, Interest.Readable, (_, _) => { }));

        Assert.Throws<ArgumentOutOfRangeException>(() => loop.Schedule(TimeSpan.FromMilliseconds(-5), _ => { }));
        Assert.Throws<ArgumentOutOfRangeException>(() => loop.ScheduleRepeating(TimeSpan.Zero, TimeSpan.Zero, _ => { }));

        reg.Dispose();
        reg.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => reg.ChangeInterest(Interest.Writable));

        loop.Dispose();
        Assert.Throws<ObjectDisposedException>(() => loop.Register(pair.Local, Interest.Readable, (_, _) => { }));
        Assert.Throws<ObjectDisposedException>(() => loop.Post(() => { }));
        Assert.Throws<ObjectDisposedException>(() => loop.Run());
        Assert.False(loop.TryPost(_ => { }, null));
    }

    [SkippableFact]
    public void A_regular_file_cannot_be_registered()
    {
        Backends.SkipUnlessAvailable(EventLoopBackend.Epoll);
        string path = Path.GetTempFileName();
        try
        {
            using var file = new FileStream(path, FileMode.Open);
            using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Epoll });
            var ex = Assert.Throws<ArgumentException>(() => loop.RegisterHandle(file.SafeFileHandle, Interest.Readable, (_, _) => { }));
            Assert.Equal("handle", ex.ParamName);
            Assert.Contains("regular files", ex.Message, StringComparison.Ordinal);
            Assert.Equal(0, loop.RegistrationCount);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
