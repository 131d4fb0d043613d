using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>What the kernel reports for a connected TCP pair on loopback, and the trigger modes at the raw level.</summary>
public class EpollReadinessTests
{
    [Fact]
    public void ConnectedSocketIsWritableNotReadable()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In | EpollEvents.Out, 1);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.Out, 1) }, Waits.Poll(epoll));
    }

    [Fact]
    public void InAfterPeerSendsAndNotAfterDrain()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 1);
        Assert.Empty(Waits.Poll(epoll));
        pair.Peer.Send(new byte[] { 1, 2, 3 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 1, EpollEvents.In).Events);
        var buf = new byte[16];
        Assert.Equal(3, pair.Local.Receive(buf));
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void RdHupAfterPeerShutdownSend()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In | EpollEvents.RdHup, 1);
        pair.Peer.Shutdown(SocketShutdown.Send);
        var ev = Waits.WaitFor(epoll, 1, EpollEvents.RdHup);
        Assert.Equal(EpollEvents.In | EpollEvents.RdHup, ev.Events);
        Assert.Equal(0, pair.Local.Receive(new byte[1])); // end of stream
    }

    [Fact]
    public void RdHupIsNotReportedWithoutInterest()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 1);
        pair.Peer.Shutdown(SocketShutdown.Send);
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 1, EpollEvents.In).Events);
    }

    [Fact]
    public void HupIsReportedWithEmptyInterest()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.None, 1);
        Assert.Empty(Waits.Poll(epoll));
        // Both directions shut: our side's send, and the peer's send (we receive its FIN).
        pair.Local.Shutdown(SocketShutdown.Send);
        pair.Peer.Shutdown(SocketShutdown.Send);
        var ev = Waits.WaitFor(epoll, 1, EpollEvents.Hup);
        Assert.Equal(EpollEvents.Hup, ev.Events & ~EpollEvents.Err);
        Assert.Equal(EpollEvents.None, ev.Events & (EpollEvents.In | EpollEvents.Out | EpollEvents.RdHup));
    }

    [Fact]
    public void ErrIsReportedWithEmptyInterestAfterReset()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.None, 1);
        pair.ResetPeer(); // RST: the server side gets ECONNRESET
        var ev = Waits.WaitFor(epoll, 1, EpollEvents.Err);
        Assert.Equal(EpollEvents.Err | EpollEvents.Hup, ev.Events);
        var error = Assert.Throws<SocketException>(() => pair.Local.Receive(new byte[1]));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public void OutIsReportedAgainAfterTheSendBufferDrains()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        pair.Local.Blocking = false;
        pair.Local.SendBufferSize = 4096;
        pair.Peer.ReceiveBufferSize = 4096;
        epoll.Add(pair.LocalFd, EpollEvents.Out, 1);
        Assert.Single(Waits.Poll(epoll));

        // Fill until EAGAIN; then the socket is not writable. A late ACK can free some room just after EAGAIN,
        // so fill again until a poll right after EAGAIN reports nothing.
        var chunk = new byte[65536];
        long sent = 0;
        bool full = false;
        for (int attempt = 0; attempt < 50 && !full; attempt++)
        {
            while (true)
            {
                int n = pair.Local.Send(chunk, 0, chunk.Length, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock)
                {
                    break;
                }

                Assert.Equal(SocketError.Success, error);
                sent += n;
            }

            full = Waits.Poll(epoll).Length == 0;
            if (!full)
            {
                System.Threading.Thread.Sleep(10);
            }
        }

        Assert.True(full, "a socket whose send buffer is full was still reported writable");

        // The peer reads it all: writable again.
        var sink = new byte[65536];
        long received = 0;
        while (received < sent)
        {
            received += pair.Peer.Receive(sink);
        }

        Assert.Equal(EpollEvents.Out, Waits.WaitFor(epoll, 1, EpollEvents.Out).Events);
    }

    [Fact]
    public void LevelTriggeredReportsUntilDrained()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In, 1);
        pair.Peer.Send(new byte[] { 1 });
        Waits.WaitFor(epoll, 1, EpollEvents.In);
        // Not drained: reported again, every time.
        Assert.Single(Waits.Poll(epoll));
        Assert.Single(Waits.Poll(epoll));
        pair.Local.Receive(new byte[8]);
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void EdgeTriggeredReportsOncePerArrival()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        pair.Local.Blocking = false;
        epoll.Add(pair.LocalFd, EpollEvents.In | EpollEvents.EdgeTriggered, 1);
        pair.Peer.Send(new byte[] { 1 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 1, EpollEvents.In).Events);

        // Data is still unread, but no new edge: nothing more.
        Assert.Empty(Waits.Poll(epoll));
        Assert.Empty(Waits.Poll(epoll));

        // New data is a new edge.
        pair.Peer.Send(new byte[] { 2 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 1, EpollEvents.In).Events);
        Assert.Empty(Waits.Poll(epoll));

        // The caller drains to EAGAIN; then only new data wakes it.
        var buf = new byte[8];
        int total = 0;
        while (true)
        {
            int n = pair.Local.Receive(buf, 0, buf.Length, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock)
            {
                break;
            }

            total += n;
        }

        Assert.Equal(2, total);
        Assert.Empty(Waits.Poll(epoll));
        pair.Peer.Send(new byte[] { 3 });
        Waits.WaitFor(epoll, 1, EpollEvents.In);
    }

    [Fact]
    public void EdgeTriggeredModifyReportsTheCurrentLevelOnce()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.EdgeTriggered, 1);
        Assert.Single(Waits.Poll(epoll));
        Assert.Empty(Waits.Poll(epoll));
        // EPOLL_CTL_MOD polls the descriptor again: a readable one is reported once more.
        epoll.Modify(efd.FileDescriptor, EpollEvents.In | EpollEvents.EdgeTriggered, 2);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, 2) }, Waits.Poll(epoll));
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void OneShotDisablesUntilRearmed()
    {
        using var epoll = EpollHandle.Create();
        using var pair = SocketPair.CreateBlocking();
        epoll.Add(pair.LocalFd, EpollEvents.In | EpollEvents.OneShot, 1);
        pair.Peer.Send(new byte[] { 1 });
        Assert.Equal(EpollEvents.In, Waits.WaitFor(epoll, 1, EpollEvents.In).Events);

        // Disabled: neither the unread byte nor new data is reported.
        Assert.Empty(Waits.Poll(epoll));
        pair.Peer.Send(new byte[] { 2 });
        System.Threading.Thread.Sleep(20);
        Assert.Empty(Waits.Poll(epoll));

        // Still registered: add fails with EEXIST, modify re-arms.
        var error = Assert.Throws<NativeCallException>(() => epoll.Add(pair.LocalFd, EpollEvents.In, 1));
        Assert.Equal("EEXIST", error.ErrorName);
        epoll.Modify(pair.LocalFd, EpollEvents.In | EpollEvents.OneShot, 2);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, 2) }, Waits.Poll(epoll));
        Assert.Empty(Waits.Poll(epoll));
    }

    [Fact]
    public void OneShotDeleteAfterFire()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.OneShot, 1);
        Assert.Single(Waits.Poll(epoll));
        epoll.Delete(efd.FileDescriptor);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 3);
        Assert.Equal(3UL, Waits.Poll(epoll).Single().Data);
    }

    public static TheoryData<ulong> UserDataValues => new()
    {
        0UL,
        1UL,
        0x7FFF_FFFFUL,
        0x8000_0000UL,
        0xFFFF_FFFFUL,
        0x1_0000_0000UL,
        0x8000_0000_0000_0000UL,
        0xFFFF_FFFF_0000_0000UL,
        0xDEAD_BEEF_CAFE_BABEUL,
        ulong.MaxValue - 1,
        ulong.MaxValue,
    };

    [Theory]
    [MemberData(nameof(UserDataValues))]
    public void UserDataRoundTrips(ulong data)
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, data);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, data) }, Waits.Poll(epoll));
        epoll.Modify(efd.FileDescriptor, EpollEvents.In, ~data);
        Assert.Equal(new[] { new EpollEvent(EpollEvents.In, ~data) }, Waits.Poll(epoll));
    }

    [Fact]
    public void ManyEventsInOneWaitKeepTheirOwnDataAndFlags()
    {
        // Several records in one buffer: on x86-64 they arrive packed (12 bytes) and are widened in place.
        using var epoll = EpollHandle.Create();
        var fds = new List<EventFdHandle>();
        var pairs = new List<SocketPair>();
        var expected = new HashSet<EpollEvent>();
        try
        {
            for (int i = 0; i < 7; i++)
            {
                var efd = EventFdHandle.Create(1);
                fds.Add(efd);
                ulong data = 0xA5A5_0000_0000_0000UL | ((ulong)i << 40) | (uint)(i * 0x1111_1111);
                epoll.Add(efd.FileDescriptor, EpollEvents.In | EpollEvents.Out, data);
                expected.Add(new EpollEvent(EpollEvents.In | EpollEvents.Out, data));
            }

            for (int i = 0; i < 3; i++)
            {
                var pair = SocketPair.CreateBlocking();
                pairs.Add(pair);
                ulong data = ulong.MaxValue - (ulong)i;
                epoll.Add(pair.LocalFd, EpollEvents.In | EpollEvents.Out, data);
                expected.Add(new EpollEvent(EpollEvents.Out, data));
            }

            var buffer = new EpollEvent[32];
            int n = epoll.Wait(buffer, 0);
            Assert.Equal(expected.Count, n);
            Assert.Equal(expected, buffer.Take(n).ToHashSet());
            Assert.All(buffer.Skip(n), e => Assert.Equal(default, e));
        }
        finally
        {
            fds.ForEach(f => f.Dispose());
            pairs.ForEach(p => p.Dispose());
        }
    }

    [Theory]
    [InlineData(EpollEvents.EdgeTriggered)]
    [InlineData(EpollEvents.OneShot)]
    public void MoreReadyThanTheBufferHoldsReturnsBufferLengthThenTheRest(EpollEvents mode)
    {
        using var epoll = EpollHandle.Create();
        var fds = Enumerable.Range(0, 10).Select(_ => EventFdHandle.Create(1)).ToList();
        try
        {
            for (int i = 0; i < fds.Count; i++)
            {
                epoll.Add(fds[i].FileDescriptor, EpollEvents.In | mode, (ulong)i);
            }

            var buffer = new EpollEvent[4];
            var seen = new List<ulong>();
            Assert.Equal(4, epoll.Wait(buffer, 0));
            seen.AddRange(buffer.Select(e => e.Data));
            Assert.Equal(4, epoll.Wait(buffer, 0));
            seen.AddRange(buffer.Select(e => e.Data));
            Assert.Equal(2, epoll.Wait(buffer, 0));
            seen.AddRange(buffer.Take(2).Select(e => e.Data));
            Assert.Equal(0, epoll.Wait(buffer, 0));
            Assert.Equal(Enumerable.Range(0, 10).Select(i => (ulong)i), seen.OrderBy(d => d));
        }
        finally
        {
            fds.ForEach(f => f.Dispose());
        }
    }

    [Fact]
    public void LevelTriggeredOverflowDoesNotStarveTheRest()
    {
        // Reported level-triggered entries go to the back of the ready list, so three waits of four see all ten.
        using var epoll = EpollHandle.Create();
        var fds = Enumerable.Range(0, 10).Select(_ => EventFdHandle.Create(1)).ToList();
        try
        {
            for (int i = 0; i < fds.Count; i++)
            {
                epoll.Add(fds[i].FileDescriptor, EpollEvents.In, (ulong)i);
            }

            var buffer = new EpollEvent[4];
            var seen = new HashSet<ulong>();
            for (int round = 0; round < 3; round++)
            {
                Assert.Equal(4, epoll.Wait(buffer, 0));
                seen.UnionWith(buffer.Select(e => e.Data));
            }

            Assert.Equal(10, seen.Count);
        }
        finally
        {
            fds.ForEach(f => f.Dispose());
        }
    }

    [Fact]
    public void SingleEntryBuffer()
    {
        using var epoll = EpollHandle.Create();
        using var a = EventFdHandle.Create(1);
        using var b = EventFdHandle.Create(1);
        epoll.Add(a.FileDescriptor, EpollEvents.In | EpollEvents.OneShot, 1);
        epoll.Add(b.FileDescriptor, EpollEvents.In | EpollEvents.OneShot, 2);
        Span<EpollEvent> one = stackalloc EpollEvent[1];
        Assert.Equal(1, epoll.Wait(one, 0));
        ulong first = one[0].Data;
        Assert.Equal(1, epoll.Wait(one, 0));
        Assert.Equal(3UL, first + one[0].Data);
        Assert.Equal(0, epoll.Wait(one, 0));
    }

    [Fact]
    public void WaitWritesIntoASliceOfALargerBuffer()
    {
        using var epoll = EpollHandle.Create();
        using var efd = EventFdHandle.Create(1);
        epoll.Add(efd.FileDescriptor, EpollEvents.In, 0x1122_3344_5566_7788UL);
        var buffer = new EpollEvent[8];
        var sentinel = new EpollEvent(EpollEvents.Msg, 0xFFFF);
        Array.Fill(buffer, sentinel);
        Assert.Equal(1, epoll.Wait(buffer.AsSpan(3, 2), 0));
        Assert.Equal(new EpollEvent(EpollEvents.In, 0x1122_3344_5566_7788UL), buffer[3]);
        Assert.All(buffer.Where((_, i) => i != 3), e => Assert.Equal(sentinel, e));
    }
}
