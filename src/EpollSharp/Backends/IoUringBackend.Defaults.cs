using System;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// Whether an io_uring loop's connections use the completion path by default: yes when the kernel takes a total cap on a
/// multishot receive (<c>sqe-&gt;optlen</c>, Linux 6.16 and later), which a small ring of its own finds out once per
/// process; <c>EPOLLSHARP_IO_URING_COMPLETIONS</c> overrides it (<c>1</c> forces the path, <c>0</c> turns it off).
/// </summary>
/// <remarks>
/// Without the cap, a multishot receive drains the socket as data arrives whatever the connection does, so a paused
/// connection could hold up to a socket buffer of data: readiness is the safer choice there.
/// </remarks>
internal sealed unsafe partial class IoUringBackend
{
    private static readonly object s_capLock = new();
    private static string? s_capUnavailableReason;

    /// <summary>
    /// The completion path's process default: <c>EPOLLSHARP_IO_URING_COMPLETIONS</c> when it says on ("1", "true", "on")
    /// or off ("0", "false", "off"), otherwise whether the kernel has the capped multishot receive.
    /// </summary>
    internal static bool CompletionsByDefault => CompletionsOverride ?? CappedReceiveAvailable(out _);

    /// <summary>What <c>EPOLLSHARP_IO_URING_COMPLETIONS</c> says: true (on), false (off) or null (not set, or neither).</summary>
    internal static bool? CompletionsOverride => ParseSwitch(s_completionsSwitch);

    /// <summary>Parses the switch's value: "1", "true", "on" → true; "0", "false", "off" → false; anything else → null.</summary>
    internal static bool? ParseSwitch(string? value)
    {
        string v = value?.Trim() ?? string.Empty;
        if (v == "1" || string.Equals(v, "true", StringComparison.OrdinalIgnoreCase) || string.Equals(v, "on", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        if (v == "0" || string.Equals(v, "false", StringComparison.OrdinalIgnoreCase) || string.Equals(v, "off", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        return null;
    }

    /// <summary>Why the completion path is off when it was not asked for (the loop's options or the variable said no, or the kernel lacks the cap).</summary>
    private static string CompletionsOffReason()
    {
        if (CompletionsOverride == false)
        {
            return "switched off (EPOLLSHARP_IO_URING_COMPLETIONS=0)";
        }

        return CappedReceiveAvailable(out string reason)
            ? "switched off by the loop's options"
            : "off by default: " + reason + " (EPOLLSHARP_IO_URING_COMPLETIONS=1 forces it)";
    }

    /// <summary>
    /// Whether the kernel takes a total cap on a multishot receive (Linux 6.16 and later); found out once per process with a
    /// ring of its own: a capped multishot receive on one end of a socket pair whose other end is closed. A kernel without
    /// the cap refuses the entry (<c>EINVAL</c>, the field was reserved); one with it completes the receive (the end of
    /// the stream, or <c>ENOBUFS</c> as the probe's ring has no buffers).
    /// </summary>
    internal static bool CappedReceiveAvailable(out string reason)
    {
        lock (s_capLock)
        {
            s_capUnavailableReason ??= ProbeCappedReceive();
            reason = s_capUnavailableReason;
            return reason.Length == 0;
        }
    }

    /// <summary>The probe; an empty string when the cap is there, otherwise why not.</summary>
    private static string ProbeCappedReceive()
    {
        if (!IsAvailable(out string unavailable))
        {
            return unavailable;
        }

        if (!IoUringRing.TryCreate(4, 8, 0, out IoUringRing? created, out string why, out _))
        {
            return why;
        }

        using IoUringRing ring = created!;
        if (!ring.SupportsOps(stackalloc byte[] { Interop.IoUring.IORING_OP_RECV, Interop.IoUring.IORING_OP_SENDMSG, Interop.IoUring.IORING_OP_ASYNC_CANCEL, Interop.IoUring.IORING_OP_SENDMSG_ZC }))
        {
            return "the kernel lacks RECV, SENDMSG, ASYNC_CANCEL or SENDMSG_ZC (Linux 6.1 or later is needed)";
        }

        int* fds = stackalloc int[2];
        if (Interop.Sys.socketpair(Interop.Sys.AF_UNIX, Interop.Sys.SOCK_STREAM | Interop.Sys.SOCK_CLOEXEC, 0, fds) != 0)
        {
            return "socketpair failed with " + ErrnoNames.NameOf(Interop.Errno.Last());
        }

        try
        {
            // The peer gone: the receive ends at once (no data, the end of the stream).
            Interop.Sys.close(fds[1]);
            fds[1] = -1;
            Interop.IoUringSqe* sqe = ring.TryGetSqe();
            sqe->Opcode = Interop.IoUring.IORING_OP_RECV;
            sqe->Flags = Interop.IoUring.IOSQE_BUFFER_SELECT;
            sqe->IoPrio = Interop.IoUring.IORING_RECV_MULTISHOT;
            sqe->Fd = fds[0];
            sqe->SpliceFdIn = ReceiveArmBytes;
            sqe->UserData = 1;
            ring.Publish();
            using SafeHandleLease lease = SafeHandleLease.Acquire(ring.Handle);
            int rc;
            int errno;
            do
            {
                rc = ring.Enter(1, 1, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out errno);
            }
            while (rc < 0 && errno == Interop.Errno.EINTR);

            if (rc < 0 && !ring.HasCompletions)
            {
                return "io_uring_enter failed with " + ErrnoNames.NameOf(errno) + " while probing the receive cap";
            }

            int res = ring.Cqe(ring.CqHead).Res;
            ring.AdvanceCq(ring.CqHead + 1);
            return res switch
            {
                0 => string.Empty,
                -Interop.Errno.ENOBUFS => string.Empty,
                -Interop.Errno.EINVAL => "the kernel has no total cap for a multishot receive (Linux 6.16 or later)",
                _ => "probing the receive cap gave " + ErrnoNames.NameOf(-res),
            };
        }
        finally
        {
            Interop.Sys.close(fds[0]);
            if (fds[1] >= 0)
            {
                Interop.Sys.close(fds[1]);
            }
        }
    }
}
