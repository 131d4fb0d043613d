namespace EpollSharp.Tests.Conformance;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Readiness delivery and trigger modes, on every backend.</summary>
public class ReadinessTests
{
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Readable_is_delivered_when_the_peer_sends(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var seen = new ConcurrentQueue<Readiness>();
        int received = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) =>
        {
            seen.Enqueue(readiness);
            int n = pair.Drain();
            if (n > 0)
            {
                Interlocked.Add(ref received, n);
            }
        }));

        pair.Peer.Send(new byte[] { 1, 2, 3 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref received) == 3, "3 bytes read in the callback");
        Assert.Contains(seen, r => (r & Readiness.Readable) != 0);
        Assert.All(seen, r => Assert.Equal(Readiness.None, r & Readiness.Writable));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Writable_is_delivered_for_a_connected_socket(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        using var writable = new ManualResetEventSlim();
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Writable, (r, readiness) =>
        {
            Assert.Equal(Readiness.None, readiness & Readiness.Readable);
            if ((readiness & Readiness.Writable) != 0)
            {
                writable.Set();
                r.ChangeInterest(Interest.None);
            }
        }));
        Assert.True(writable.Wait(TimeSpan.FromSeconds(10)), "Writable was not delivered.");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Level_triggered_calls_again_while_data_is_not_drained(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int calls = 0;
        Registration reg = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) => Interlocked.Increment(ref calls)));
        pair.Peer.Send(new byte[] { 42 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 5, "at least 5 level-triggered callbacks for undrained data");
        h.Invoke(() => reg.Dispose());
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Edge_triggered_is_not_called_again_until_new_data_arrives(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int calls = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) => Interlocked.Increment(ref calls), mode: TriggerMode.Edge));
        pair.Peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 1, "the first edge");
        h.Settle(iterations: 10, sleepMs: 100);
        Assert.Equal(1, Volatile.Read(ref calls));

        pair.Peer.Send(new byte[] { 2 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 2, "a second edge after new data");
        h.Settle(iterations: 10, sleepMs: 100);
        Assert.Equal(2, Volatile.Read(ref calls));
        Assert.Equal(2, pair.Drain());
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void One_shot_is_called_once_until_rearmed(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int calls = 0;
        Registration reg = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) => Interlocked.Increment(ref calls), mode: TriggerMode.OneShot));
        pair.Peer.Send(new byte[] { 1 });
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 1, "the one-shot callback");
        h.Settle(iterations: 10, sleepMs: 100);
        Assert.Equal(1, Volatile.Read(ref calls));

        h.Invoke(() => reg.Rearm());
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 2, "a callback after re-arming (data still pending)");
        h.Settle(iterations: 10, sleepMs: 100);
        Assert.Equal(2, Volatile.Read(ref calls));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Changing_interest_takes_effect(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        var seen = new ConcurrentQueue<Readiness>();
        Registration reg = h.Invoke(() => h.Loop.Register(pair.Local, Interest.None, (r, readiness) => seen.Enqueue(readiness)));
        pair.Peer.Send(new byte[] { 1 });
        h.Settle(iterations: 5, sleepMs: 100);
        Assert.Empty(seen);

        // Changed from another thread (the test thread) while the loop waits.
        reg.ChangeInterest(Interest.Readable);
        LoopHarness.WaitUntil(() => seen.Count > 0, "Readable after changing the interest to Readable");
        Assert.All(seen, r => Assert.NotEqual(Readiness.None, r & Readiness.Readable));

        h.Invoke(() => reg.ChangeInterest(Interest.Writable));
        while (seen.TryDequeue(out _))
        {
        }

        h.Settle();
        while (seen.TryDequeue(out _))
        {
        }

        LoopHarness.WaitUntil(() => seen.Count > 0, "Writable after changing the interest to Writable");
        Assert.All(seen, r => Assert.Equal(Readiness.Writable, r & (Readiness.Writable | Readiness.Readable)));
        Assert.Equal(Interest.Writable, reg.Interest);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Peer_half_close_reports_ReadClosed_and_end_of_stream(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        Readiness all = Readiness.None;
        int eof = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) =>
        {
            all |= readiness;
            if (pair.Drain() == -1)
            {
                Volatile.Write(ref eof, 1);
                r.ChangeInterest(Interest.None);
            }
        }));
        pair.Peer.Shutdown(SocketShutdown.Send);
        LoopHarness.WaitUntil(() => Volatile.Read(ref eof) == 1, "end of stream read after the peer's half-close");
        Assert.True((all & Readiness.ReadClosed) != 0, $"ReadClosed expected, saw {all}");

        // Half-closed, not closed: the local side can still send and the peer receives it.
        Assert.Equal(4, pair.Local.Send(new byte[] { 1, 2, 3, 4 }));
        var buffer = new byte[4];
        int got = 0;
        while (got < 4)
        {
            got += pair.Peer.Receive(buffer, got, 4 - got, SocketFlags.None);
        }

        Assert.Equal(new byte[] { 1, 2, 3, 4 }, buffer);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Peer_close_reports_readable_end_of_stream(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int eof = 0;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (r, readiness) =>
        {
            if ((readiness & Readiness.Readable) != 0 && pair.Drain() == -1)
            {
                Volatile.Write(ref eof, 1);
                r.Dispose();
            }
        }));
        pair.Peer.Close();
        LoopHarness.WaitUntil(() => Volatile.Read(ref eof) == 1, "end of stream after the peer closed");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Reset_with_empty_interest_is_delivered_without_spinning(EventLoopBackend backend)
    {
        using var pair = SocketPair.Create();
        using var h = new LoopHarness(Backends.CreateLoop(backend));
        int calls = 0;
        Readiness all = Readiness.None;
        h.Invoke(() => h.Loop.Register(pair.Local, Interest.None, (r, readiness) =>
        {
            all |= readiness;
            Interlocked.Increment(ref calls);
        }));
        pair.ResetPeer();
        LoopHarness.WaitUntil(() => Volatile.Read(ref calls) >= 1, "a callback for the reset with empty interest");

        // Over the next 500 ms a spinning loop would call back thousands of times; a hang-up is reported once
        // (an error and the hang-up may come as two reports).
        Thread.Sleep(500);
        h.Settle();
        int total = Volatile.Read(ref calls);
        Assert.InRange(total, 1, 3);
        Assert.NotEqual(Readiness.None, all & (Readiness.Closed | Readiness.Error));
        Assert.Equal(Readiness.None, all & (Readiness.Readable | Readiness.Writable));
    }
}
