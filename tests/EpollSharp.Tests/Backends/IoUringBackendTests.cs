using System.Net.Sockets;
using EpollSharp.Backends;
using EpollSharp.Native;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// What is particular to the io_uring backend: availability and its reasons, explicit requests, and the
/// completion-snapshot and generation rules of its doc comment. The contract itself is checked by the conformance
/// suite, which runs on every backend (Backends.All).
/// </summary>
public sealed class IoUringBackendTests
{
    /// <summary>A setup flag no kernel defines: <c>io_uring_setup</c> refuses it with EINVAL, for real.</summary>
    private const uint UnknownSetupFlag = 1u << 31;

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly ITestOutputHelper _output;

    public IoUringBackendTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Availability_agrees_with_setting_up_a_ring_and_a_loop_can_be_made_when_available()
    {
        Skip.IfNot(Platform.IsLinux, "io_uring is Linux only");
        bool available = BackendFactory.IsAvailable(EventLoopBackend.IoUring, out string reason);
        _output.WriteLine(available ? "available" : "unavailable: " + reason);
        Assert.Equal(available, IoUringBackend.Probe(0, out string probeReason));
        Assert.Equal(reason, probeReason);
        if (available)
        {
            Assert.Equal(string.Empty, reason);
            using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring });
            Assert.Equal(EventLoopBackend.IoUring, loop.Backend);
        }
        else
        {
            Assert.StartsWith("io_uring", reason, StringComparison.Ordinal);
            var ex = Assert.Throws<PlatformNotSupportedException>(() => new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring }));
            Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
        }
    }

    [SkippableFact]
    public void A_setup_the_kernel_refuses_makes_the_backend_unavailable_with_the_errno_in_the_reason()
    {
        Skip.IfNot(Platform.IsLinux, "io_uring is Linux only");
        Assert.False(IoUringBackend.Probe(UnknownSetupFlag, out string reason));
        _output.WriteLine(reason);

        // EINVAL where the kernel has io_uring; where it has not (or forbids it), the setup fails before it looks at flags.
        Assert.Matches("^io_uring_setup failed with (EINVAL|ENOSYS|EPERM|EACCES): ", reason);
        var ex = Assert.Throws<PlatformNotSupportedException>(() => new IoUringBackend(64, UnknownSetupFlag));
        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Interop.Errno.ENOSYS, "ENOSYS", "no io_uring")]
    [InlineData(Interop.Errno.EPERM, "EPERM", "kernel.io_uring_disabled")]
    [InlineData(Interop.Errno.EACCES, "EACCES", "kernel.io_uring_group")]
    public void The_reason_names_the_errno_and_its_usual_cause(int errno, string name, string cause)
    {
        string reason = IoUringRing.SetupFailure(errno);
        Assert.Contains("io_uring_setup failed with " + name, reason, StringComparison.Ordinal);
        Assert.Contains(cause, reason, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Auto_keeps_choosing_epoll_on_Linux()
    {
        Skip.IfNot(Platform.IsLinux, "Linux only");
        Skip.IfNot(string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable)), BackendFactory.EnvironmentVariable + " is set");
        Assert.Equal(EventLoopBackend.Epoll, BackendFactory.Resolve(EventLoopBackend.Auto));
    }

    [SkippableTheory]
    [InlineData(TriggerMode.Level)]
    [InlineData(TriggerMode.Edge)]
    [InlineData(TriggerMode.OneShot)]
    public void Data_that_a_callback_drains_after_changing_the_interest_is_not_reported_again(TriggerMode mode)
    {
        // The completion-snapshot rule: a change made in a callback is armed at the next wait, after the drain.
        using var h = new LoopHarness(Util.Backends.CreateLoop(EventLoopBackend.IoUring));
        using var pair = SocketPair.Create();
        var buffer = new byte[4096];
        int calls = 0;
        int spurious = 0;
        using var received = new SemaphoreSlim(0);
        Registration reg = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable | Interest.Writable, (r, readiness) =>
        {
            Interlocked.Increment(ref calls);
            if ((readiness & Readiness.Writable) != 0)
            {
                r.ChangeInterest(Interest.Readable);
            }

            if ((readiness & Readiness.Readable) != 0)
            {
                int n = pair.Local.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock)
                {
                    Interlocked.Increment(ref spurious);
                }
                else
                {
                    Assert.True(n > 0);
                    received.Release();
                }
            }
        }, mode: mode));
        Assert.Equal(mode, reg.Mode);

        for (int i = 0; i < 20; i++)
        {
            pair.Peer.Send(new byte[] { (byte)i });
            Assert.True(received.Wait(Patience), $"message {i} was reported");
            if (mode == TriggerMode.OneShot)
            {
                h.Invoke(() => reg.ChangeInterest(Interest.Readable | Interest.Writable));
            }
        }

        h.Settle(iterations: 3, sleepMs: 20);
        Assert.Equal(0, Volatile.Read(ref spurious));
        _output.WriteLine($"{calls} callbacks for 20 messages ({mode})");
    }

    [SkippableTheory]
    [InlineData(TriggerMode.Level)]
    [InlineData(TriggerMode.Edge)]
    public void A_socket_closed_before_its_registration_is_let_go_after_a_few_loop_iterations(TriggerMode mode)
    {
        // A poll request holds a reference on the file: the backend must still let the socket close (send its FIN)
        // when its owner closes it without disposing the registration first. Posts make the loop iterate.
        using var h = new LoopHarness(Util.Backends.CreateLoop(EventLoopBackend.IoUring));
        var pair = SocketPair.Create();
        try
        {
            Registration reg = h.Invoke(() => h.Loop.Register(pair.Local, Interest.Readable, (_, _) => { }, mode: mode));
            for (int i = 0; i < 8; i++)
            {
                using var other = SocketPair.Create();
                h.Invoke(() => h.Loop.Register(other.Local, Interest.Readable, (_, _) => { }).Dispose());
            }

            pair.Local.Dispose();
            pair.Peer.Blocking = false;
            var buffer = new byte[1];
            LoopHarness.WaitUntil(
                () =>
                {
                    h.Invoke(() => { });
                    int n = pair.Peer.Receive(buffer, 0, 1, SocketFlags.None, out SocketError error);
                    return error == SocketError.Success && n == 0;
                },
                "the peer to see the end of the stream",
                10);
            h.Invoke(() => reg.Dispose());
        }
        finally
        {
            pair.Dispose();
        }
    }

    [SkippableFact]
    public void Disposing_the_loop_lets_go_of_a_socket_closed_before_its_registration()
    {
        var loop = Util.Backends.CreateLoop(EventLoopBackend.IoUring);
        var pair = SocketPair.Create();
        try
        {
            loop.Register(pair.Local, Interest.Readable, (_, _) => { });
            pair.Local.Dispose();
            loop.Dispose();
            pair.Peer.ReceiveTimeout = (int)Patience.TotalMilliseconds;
            Assert.Equal(0, pair.Peer.Receive(new byte[1]));
        }
        finally
        {
            pair.Dispose();
        }
    }
}
