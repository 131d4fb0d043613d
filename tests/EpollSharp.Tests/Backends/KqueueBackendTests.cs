using System.Diagnostics;
using EpollSharp.Backends;
using K = EpollSharp.Interop.Kqueue;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// The kqueue backend's own behaviour, below the loop: the token in udata, merging of the two filters' events,
/// one-shot over two filters, EV_EOF mapping, ENOENT tolerance, the EVFILT_USER waker, and waits that allocate
/// nothing. Skipped (with the reason) where the backend is unavailable, e.g. on Linux without EPOLLSHARP_KQUEUE_LIBRARY.
/// </summary>
public sealed class KqueueBackendTests
{
    private const ulong Token = 0xA5A5_0001_0000_002A; // a generation in the high half: udata must carry all 64 bits

    [Theory]
    [InlineData(K.EVFILT_READ, 0, 0u, Readiness.Readable)]
    [InlineData(K.EVFILT_READ, K.EV_EOF, 0u, Readiness.Readable | Readiness.ReadClosed)]
    [InlineData(K.EVFILT_READ, K.EV_EOF, 54u, Readiness.Readable | Readiness.ReadClosed | Readiness.Error | Readiness.Closed)]
    [InlineData(K.EVFILT_WRITE, 0, 0u, Readiness.Writable)]
    [InlineData(K.EVFILT_WRITE, K.EV_EOF, 0u, Readiness.Writable | Readiness.Readable)]
    [InlineData(K.EVFILT_WRITE, K.EV_EOF, 32u, Readiness.Writable | Readiness.Readable | Readiness.Error | Readiness.Closed)]
    [InlineData(K.EVFILT_READ, K.EV_ERROR, 0u, Readiness.Readable | Readiness.Error | Readiness.Closed)]
    [InlineData(K.EVFILT_TIMER, 0, 0u, Readiness.None)]
    public void Each_filter_and_flag_maps_to_readiness(short filter, int flags, uint fflags, Readiness expected)
    {
        Assert.Equal(expected, KqueueBackend.ToReadiness(filter, (ushort)flags, fflags));
    }

    /// <summary>The errno in fflags is read with the errno values of the system the library runs on (libkqueue: Linux's).</summary>
    [Theory]
    [InlineData((int)KqueueFlavor.LibKqueue, 111, SocketError.ConnectionRefused)]
    [InlineData((int)KqueueFlavor.LibKqueue, 104, SocketError.ConnectionReset)]
    [InlineData((int)KqueueFlavor.LibKqueue, 32, SocketError.Shutdown)]
    [InlineData((int)KqueueFlavor.Darwin, 61, SocketError.ConnectionRefused)]
    [InlineData((int)KqueueFlavor.Darwin, 54, SocketError.ConnectionReset)]
    [InlineData((int)KqueueFlavor.Darwin, 60, SocketError.TimedOut)]
    [InlineData((int)KqueueFlavor.FreeBsd, 61, SocketError.ConnectionRefused)]
    [InlineData((int)KqueueFlavor.FreeBsd, 54, SocketError.ConnectionReset)]
    [InlineData((int)KqueueFlavor.FreeBsd, 65, SocketError.HostUnreachable)]
    [InlineData((int)KqueueFlavor.FreeBsd, 32, SocketError.Shutdown)]
    [InlineData((int)KqueueFlavor.Darwin, 9999, SocketError.SocketError)]
    public void The_errno_in_fflags_maps_with_the_flavour_s_errno_values(int flavor, int errno, SocketError expected)
    {
        Assert.Equal(expected, KqueueBackend.ToSocketError((KqueueFlavor)flavor, errno));
    }

    /// <summary>
    /// A refused connect: the write filter fires with EV_EOF and ECONNREFUSED in fflags, and the backend hands that error
    /// over with the event (over libkqueue it is no longer on the socket afterwards).
    /// </summary>
    [SkippableFact]
    public void A_refused_connect_comes_with_its_error_in_the_event()
    {
        using var backend = Create();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        try
        {
            socket.Connect(ClosedPort());
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
        }

        var target = new BackendTarget(socket.SafeHandle, socket);
        backend.Add(target, Token, Interest.Writable, TriggerMode.Edge);
        BackendEvent e1 = Assert.Single(WaitFor(backend, 5000));
        Assert.Equal(Token, e1.Token);
        Assert.Equal(Readiness.Error | Readiness.Closed, e1.Readiness & (Readiness.Error | Readiness.Closed));
        Assert.Equal(SocketError.ConnectionRefused, e1.SocketError);
        backend.Remove(target);
    }

    /// <summary>A reset by the peer: the read filter fires with EV_EOF and ECONNRESET in fflags, handed over with the event.</summary>
    [SkippableFact]
    public void A_reset_comes_with_its_error_in_the_event_and_an_orderly_end_with_none()
    {
        using var backend = Create();
        using (SocketPair reset = SocketPair.Create())
        {
            var target = new BackendTarget(reset.Local.SafeHandle, reset.Local);
            backend.Add(target, Token, Interest.Readable, TriggerMode.Edge);
            reset.Peer.LingerState = new LingerOption(true, 0);
            reset.Peer.Close();
            BackendEvent e = Assert.Single(WaitFor(backend, 5000));
            Assert.True((e.Readiness & Readiness.Error) != 0, "a reset is reported with Error: " + e.Readiness);
            Assert.Equal(SocketError.ConnectionReset, e.SocketError);
            backend.Remove(target);
        }

        using (SocketPair orderly = SocketPair.Create())
        {
            var target = new BackendTarget(orderly.Local.SafeHandle, orderly.Local);
            backend.Add(target, Token, Interest.Readable, TriggerMode.Edge);
            orderly.Peer.Shutdown(SocketShutdown.Send);
            BackendEvent e = Assert.Single(WaitFor(backend, 5000));
            Assert.Equal(Readiness.Readable | Readiness.ReadClosed, e.Readiness);
            Assert.Equal(SocketError.Success, e.SocketError);
            backend.Remove(target);
        }
    }

    /// <summary>
    /// A TCP socket that was never connected, watched as an empty interest is (an edge-triggered read filter): kqueue reports
    /// no hang-up for it. On macOS and FreeBSD neither filter fires; libkqueue passes on Linux's POLLHUP as EV_EOF without an
    /// error on the read filter, which is an end of stream (Readable | ReadClosed), never Closed or Error.
    /// </summary>
    [SkippableFact]
    public void A_never_connected_socket_reports_no_hang_up()
    {
        using var backend = Create();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        var target = new BackendTarget(socket.SafeHandle, socket);
        backend.Add(target, Token, Interest.None, TriggerMode.Level);
        List<BackendEvent> events = WaitFor(backend, 300);
        Assert.All(events, e => Assert.Equal(Readiness.None, e.Readiness & (Readiness.Closed | Readiness.Error)));
        Assert.All(events, e => Assert.Equal(Readiness.Readable | Readiness.ReadClosed, e.Readiness));
        if (backend.Flavor != KqueueFlavor.LibKqueue)
        {
            Assert.Empty(events);
        }

        backend.Remove(target);
    }

    [SkippableFact]
    public void The_full_64_bit_token_comes_back_and_both_filters_merge_into_one_event()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        pair.Peer.Send(new byte[] { 1 });
        Thread.Sleep(20);
        backend.Add(Target(pair), Token, Interest.ReadWrite, TriggerMode.Level);
        var events = WaitFor(backend, 1000);
        var e = Assert.Single(events);
        Assert.Equal(Token, e.Token);
        Assert.Equal(Readiness.Readable | Readiness.Writable, e.Readiness & (Readiness.Readable | Readiness.Writable));
        backend.Remove(Target(pair));
        Assert.Empty(WaitFor(backend, 50));
    }

    [SkippableFact]
    public void A_one_shot_registration_interested_in_both_reports_once_until_modified()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();

        // Writable at once, no data yet: the write filter fires; the read filter must be disarmed with it.
        backend.Add(Target(pair), Token, Interest.ReadWrite, TriggerMode.OneShot);
        var first = Assert.Single(WaitFor(backend, 1000));
        Assert.Equal(Readiness.Writable, first.Readiness);

        pair.Peer.Send(new byte[] { 1 });
        Thread.Sleep(50);
        Assert.Empty(WaitFor(backend, 100)); // neither the new data nor the room is reported: disarmed

        backend.Modify(Target(pair), Token, Interest.ReadWrite, TriggerMode.OneShot);
        var second = Assert.Single(WaitFor(backend, 1000));
        Assert.Equal(Readiness.Readable | Readiness.Writable, second.Readiness & (Readiness.Readable | Readiness.Writable));
        Assert.Empty(WaitFor(backend, 100));

        // Re-armed for reading only, after both filters fired (their deletes give ENOENT, which is ignored).
        backend.Modify(Target(pair), Token, Interest.Readable, TriggerMode.OneShot);
        Assert.Equal(Readiness.Readable, Assert.Single(WaitFor(backend, 1000)).Readiness & ~Readiness.ReadClosed);
        backend.Remove(Target(pair)); // nothing left to delete: no exception
    }

    [SkippableFact]
    public void Edge_triggered_reports_a_readiness_once_per_change()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        backend.Add(Target(pair), Token, Interest.Readable, TriggerMode.Edge);
        Assert.Empty(WaitFor(backend, 50));
        pair.Peer.Send(new byte[] { 1 });
        Assert.Single(WaitFor(backend, 1000));
        Assert.Empty(WaitFor(backend, 100));
        pair.Peer.Send(new byte[] { 2 });
        Assert.Single(WaitFor(backend, 1000));
        backend.Remove(Target(pair));
    }

    [SkippableFact]
    public void Registering_a_descriptor_twice_is_an_ArgumentException_and_changes_nothing()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        backend.Add(Target(pair), Token, Interest.Writable, TriggerMode.Level);
        var ex = Assert.Throws<ArgumentException>(() => backend.Add(Target(pair), Token + 1, Interest.Readable, TriggerMode.Level));
        Assert.Equal("handle", ex.ParamName);
        Assert.Contains("already registered", ex.Message, StringComparison.Ordinal);
        var e = Assert.Single(WaitFor(backend, 1000));
        Assert.Equal(Token, e.Token);
        Assert.Equal(Readiness.Writable, e.Readiness);
        backend.Remove(Target(pair));
        backend.Remove(Target(pair)); // a second remove deletes nothing and does not throw
    }

    [SkippableFact]
    public void A_reset_reports_error_and_hang_up_and_EV_EOF_on_the_write_filter_also_means_readable()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        backend.Add(Target(pair), Token, Interest.Writable, TriggerMode.Edge);
        Assert.Equal(Readiness.Writable, Assert.Single(WaitFor(backend, 1000)).Readiness);
        pair.ResetPeer();
        Readiness seen = Readiness.None;
        var sw = Stopwatch.StartNew();
        while ((seen & Readiness.Error) == 0 && sw.ElapsedMilliseconds < 5000)
        {
            foreach (var e in WaitFor(backend, 100))
            {
                seen |= e.Readiness;
            }
        }

        Assert.Equal(Readiness.Writable | Readiness.Readable | Readiness.Error | Readiness.Closed, seen);
        backend.Remove(Target(pair));
    }

    [SkippableFact]
    public void An_empty_interest_reports_a_reset_once_and_data_without_readable_interest_never_spins()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        backend.Add(Target(pair), Token, Interest.None, TriggerMode.Level);
        pair.Peer.Send(new byte[] { 1 });
        Thread.Sleep(20);

        // The data wakes the wait at most once (the loop filters it out); it is not reported again and again.
        int wakes = 0;
        for (int i = 0; i < 5; i++)
        {
            wakes += WaitFor(backend, 20).Count;
        }

        Assert.InRange(wakes, 0, 1);

        pair.ResetPeer();
        Readiness seen = Readiness.None;
        var sw = Stopwatch.StartNew();
        while ((seen & Readiness.Error) == 0 && sw.ElapsedMilliseconds < 5000)
        {
            foreach (var e in WaitFor(backend, 100))
            {
                seen |= e.Readiness;
            }
        }

        Assert.Equal(Readiness.Error | Readiness.Closed, seen & (Readiness.Error | Readiness.Closed));
        Assert.Empty(WaitFor(backend, 100)); // reported once
        backend.Remove(Target(pair));
    }

    [SkippableFact]
    public void A_one_shot_registration_with_an_empty_interest_still_reports_a_reset_after_data()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        using var other = SocketPair.Create();
        backend.Add(Target(other), Token + 7, Interest.Readable, TriggerMode.OneShot); // a one-shot entry exists
        backend.Add(Target(pair), Token, Interest.None, TriggerMode.OneShot);
        pair.Peer.Send(new byte[] { 1 });
        Thread.Sleep(20);
        WaitFor(backend, 50); // the data's wake-up (no readiness the loop would deliver)
        pair.ResetPeer();
        Readiness seen = Readiness.None;
        var sw = Stopwatch.StartNew();
        while ((seen & Readiness.Error) == 0 && sw.ElapsedMilliseconds < 5000)
        {
            foreach (var e in WaitFor(backend, 100).Where(e => e.Token == Token))
            {
                seen |= e.Readiness;
            }
        }

        Assert.Equal(Readiness.Error | Readiness.Closed, seen & (Readiness.Error | Readiness.Closed));
        backend.Remove(Target(pair));
        backend.Remove(Target(other));
    }

    [SkippableFact]
    public void A_descriptor_closed_without_Remove_leaves_nothing_that_disturbs_a_new_one_with_the_same_number()
    {
        using var backend = Create();
        using var old = SocketPair.Create();
        using var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp); // takes the number the pair's listener freed
        backend.Add(Target(old), Token, Interest.Readable, TriggerMode.Level);
        int oldFd = (int)old.Local.Handle;
        old.Local.Dispose(); // closed while registered (no Remove): libkqueue keeps its filters, the kernels do not

        // The next descriptor is the lowest free one, unless a test on another thread took it first.
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Skip.If((int)udp.Handle != oldFd, $"descriptor {oldFd} was taken by another thread");
        udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var target = new BackendTarget(udp.SafeHandle, udp);
        backend.Add(target, Token + 1, Interest.Readable, TriggerMode.Level);
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        sender.SendTo(new byte[] { 9 }, udp.LocalEndPoint!);
        var e = Assert.Single(WaitFor(backend, 1000));
        Assert.Equal(Token + 1, e.Token);
        Assert.Equal(Readiness.Readable, e.Readiness);
        backend.Remove(target);
    }

    [SkippableFact]
    public void Wake_before_the_wait_returns_it_at_once_is_not_reported_and_coalesces()
    {
        using var backend = Create();
        backend.Wake();
        backend.Wake();
        backend.Wake();
        var sw = Stopwatch.StartNew();
        Assert.Empty(WaitFor(backend, 5000));
        Assert.True(sw.ElapsedMilliseconds < 2000, $"the wake-up was lost: the wait took {sw.ElapsedMilliseconds} ms");

        // Coalesced: nothing is left to end the next wait early.
        sw.Restart();
        Assert.Empty(WaitFor(backend, 100));
        Assert.True(sw.ElapsedMilliseconds >= 90, $"a second wake-up was left over: the wait took {sw.ElapsedMilliseconds} ms");
    }

    [SkippableFact]
    public void Wake_from_another_thread_ends_an_infinite_wait()
    {
        using var backend = Create();
        var waiter = new Thread(() => WaitFor(backend, -1));
        waiter.Start();
        Thread.Sleep(50);
        backend.Wake();
        Assert.True(waiter.Join(TimeSpan.FromSeconds(5)), "Wake did not end the wait");
    }

    [SkippableFact]
    public void A_warm_wait_allocates_nothing()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        pair.Peer.Send(new byte[] { 1 });
        backend.Add(Target(pair), Token, Interest.ReadWrite, TriggerMode.Level);
        var events = new BackendEvent[16];
        for (int i = 0; i < 100; i++)
        {
            backend.Wait(events, 1000);
            backend.Wake();
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            backend.Wait(events, 1000);
            backend.Wake();
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        backend.Remove(Target(pair));
    }

    [SkippableFact]
    public void Changes_from_another_thread_take_effect_while_a_wait_sleeps()
    {
        using var backend = Create();
        using var pair = SocketPair.Create();
        List<BackendEvent>? got = null;
        var waiter = new Thread(() => got = WaitFor(backend, 5000));
        waiter.Start();
        Thread.Sleep(50);
        backend.Add(Target(pair), Token, Interest.Writable, TriggerMode.Level);
        Assert.True(waiter.Join(TimeSpan.FromSeconds(5)));
        Assert.Equal(Token, Assert.Single(got!).Token);
        backend.Remove(Target(pair));
    }

    private static KqueueBackend Create(int maxEvents = 64)
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.Kqueue);
        return new KqueueBackend(maxEvents);
    }

    private static EndPoint ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return probe.LocalEndPoint!;
    }

    private static BackendTarget Target(SocketPair pair) => new(pair.Local.SafeHandle, pair.Local);

    private static List<BackendEvent> WaitFor(KqueueBackend backend, int timeoutMilliseconds)
    {
        var events = new BackendEvent[64];
        int n = backend.Wait(events, timeoutMilliseconds);
        return events.Take(n).ToList();
    }
}
