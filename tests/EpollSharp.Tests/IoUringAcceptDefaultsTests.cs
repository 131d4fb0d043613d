using EpollSharp.Backends;
using Xunit.Abstractions;

namespace EpollSharp.Tests;

/// <summary>
/// The completion path (and with it the multishot accept) is the default on an io_uring loop exactly when the kernel has
/// the capped multishot receive, which a probe finds out once per process; <c>EPOLLSHARP_IO_URING_COMPLETIONS</c> overrides it.
/// </summary>
public class IoUringAcceptDefaultsTests
{
    private readonly ITestOutputHelper _output;

    public IoUringAcceptDefaultsTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void An_io_uring_loop_uses_completions_by_default_exactly_when_the_kernel_has_the_capped_receive()
    {
        EpollSharp.Tests.Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        bool capped = IoUringBackend.CappedReceiveAvailable(out string reason);
        bool? overridden = IoUringBackend.CompletionsOverride;
        _output.WriteLine($"kernel {Environment.OSVersion.Version}: capped receive {capped} {reason}; override {overridden?.ToString() ?? "none"}");
        using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring });
        bool expected = overridden ?? capped;
        if (expected)
        {
            // Forced or by default; the kernel may still lack what the path needs (then it says so below).
            using var probe = new IoUringBackend(16, 0, completions: true);
            expected = probe.CompletionsAvailable(out _);
        }

        Assert.Equal(expected, loop.CompletionIo is not null);
        if (loop.CompletionIo is null)
        {
            using var backend = new IoUringBackend(16, 0);
            backend.CompletionsAvailable(out string why);
            _output.WriteLine("completions off: " + why);
            Assert.False(string.IsNullOrEmpty(why));
        }

        // This machine's kernel (6.18) has the cap: the probe must find it there.
        if (Environment.OSVersion.Version >= new Version(6, 16))
        {
            Assert.True(capped, reason);
        }
    }

    [Fact]
    public void The_switch_turns_the_path_on_or_off_and_anything_else_leaves_the_default()
    {
        foreach (string on in new[] { "1", "true", "TRUE", " on " })
        {
            Assert.True(IoUringBackend.ParseSwitch(on));
        }

        foreach (string off in new[] { "0", "false", "Off" })
        {
            Assert.False(IoUringBackend.ParseSwitch(off));
        }

        foreach (string? neither in new[] { null, string.Empty, "yes", "2" })
        {
            Assert.Null(IoUringBackend.ParseSwitch(neither));
        }
    }
}
