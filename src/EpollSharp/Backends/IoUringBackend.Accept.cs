using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// Multishot accept (<c>IORING_OP_ACCEPT</c> with <c>IORING_ACCEPT_MULTISHOT</c>, Linux 5.19 and later; the completion
/// path needs 6.1): one armed request accepts every stream that arrives on a listening socket, each a completion that
/// carries the new descriptor (non-blocking, close-on-exec). The listening socket needs no readiness registration.
/// </summary>
/// <remarks>
/// An accept channel lives in the same slot table as the streams' channels, with its own kind in the user data
/// (<see cref="KindAccept"/>); its completions are reaped and dispatched with the receives, in the kernel's order.
/// Closing it cancels the accept and waits for the final completion, since the request holds a reference on the
/// listening socket: closing the descriptor before would leave the address bound.
/// </remarks>
internal sealed unsafe partial class IoUringBackend
{
    private const ulong KindAccept = 4;

    /// <summary><c>IORING_OP_ACCEPT</c>.</summary>
    private const byte OpAccept = 13;

    /// <summary><c>IORING_ACCEPT_MULTISHOT</c> (in <c>sqe-&gt;ioprio</c>).</summary>
    private const ushort AcceptMultishot = 1 << 0;

    /// <summary><c>IORING_ACCEPT_POLL_FIRST</c> (Linux 6.10): wait for a pending connection before trying (and taking a descriptor).</summary>
    private const ushort AcceptPollFirst = 1 << 2;

    /// <inheritdoc/>
    /// <remarks>On a kernel with the capped receive (6.16, probed), which also has <c>IORING_ACCEPT_POLL_FIRST</c> (6.10).</remarks>
    public bool AcceptWaitsForPending => CappedReceiveAvailable(out _);

    /// <inheritdoc/>
    public AcceptChannel OpenAccept(SafeHandle handle, IAcceptSink sink)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            int slot = TakeChannelSlot();
            var channel = new AcceptChannel((int)handle.DangerousGetHandle(), slot, ++_channelGenerations[slot], sink);
            _channels[slot] = channel;
            return channel;
        }
    }

    /// <inheritdoc/>
    public void StartAccept(AcceptChannel channel, bool multishot)
    {
        lock (_lock)
        {
            if (_disposed || channel.Closed || channel.AcceptArmed)
            {
                return;
            }

            Interop.IoUringSqe* sqe = NextSqe();
            sqe->Opcode = OpAccept;
            sqe->IoPrio = (ushort)((multishot ? AcceptMultishot : 0) | (AcceptWaitsForPending ? AcceptPollFirst : 0));
            sqe->Fd = channel.Fd;
            sqe->OpFlags = Interop.Sys.SOCK_NONBLOCK | Interop.Sys.SOCK_CLOEXEC;
            sqe->UserData = OpUserData(KindAccept, channel);
            channel.AcceptArmed = true;
            channel.AcceptMultishot = multishot;
            _channelOps++;
        }
    }

    /// <inheritdoc/>
    public void CancelAccept(AcceptChannel channel)
    {
        lock (_lock)
        {
            if (_disposed || !channel.AcceptArmed)
            {
                return;
            }

            QueueCancel(OpUserData(KindAccept, channel), channel);
        }
    }

    /// <inheritdoc/>
    public void CloseAccept(AcceptChannel channel)
    {
        ulong userData = OpUserData(KindAccept, channel);
        lock (_lock)
        {
            if (channel.Closed)
            {
                return;
            }

            channel.Closed = true;
            if (_disposed)
            {
                return;
            }

            if (!channel.AcceptArmed)
            {
                FreeChannel(channel);
                return;
            }

            QueueCancel(userData, channel);
            Submit();
        }

        // The cancelled accept completes in the task work of the thread that armed it (this one: every accept is armed
        // on the loop thread); entering with GETEVENTS runs work the kernel deferred to it. Bounded, like a poll's removal.
        long deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        var spin = default(SpinWait);
        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        while (true)
        {
            lock (_lock)
            {
                if (_disposed || !channel.AcceptArmed || AcceptEndReaped(channel) || FinalCompletionQueued(userData) || Stopwatch.GetTimestamp() > deadline)
                {
                    return;
                }

                _ring.Enter(0, 0, Interop.IoUring.IORING_ENTER_GETEVENTS, null, out _);
                if (FinalCompletionQueued(userData))
                {
                    return;
                }
            }

            spin.SpinOnce();
        }
    }

    /// <summary>Whether the last wait reaped the accept's final completion (not yet dispatched).</summary>
    private bool AcceptEndReaped(AcceptChannel channel)
    {
        for (int i = 0; i < _pendingReceives; i++)
        {
            ref PendingCompletion p = ref _pending[i];
            if (p.Channel == channel && p.Kind == KindAccept && (p.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Hands an accept completion to its sink; after the channel was closed, closes an accepted descriptor instead.</summary>
    private void DispatchAccept(AcceptChannel channel, int result, uint flags)
    {
        bool more = (flags & Interop.IoUring.IORING_CQE_F_MORE) != 0;
        if (!more)
        {
            channel.AcceptArmed = false;
        }

        try
        {
            if (channel.Closed)
            {
                if (result >= 0)
                {
                    // Accepted before the cancellation took effect: as a connection left in the backlog of a closed listener.
                    Interop.Sys.close(result);
                }
            }
            else
            {
                if (result >= 0)
                {
                    channel.Accepts++;
                }

                channel.AcceptSink.OnAcceptCompleted(result, more);
            }
        }
        finally
        {
            if (channel.Closed && !channel.AcceptArmed)
            {
                lock (_lock)
                {
                    FreeChannel(channel);
                }
            }
        }
    }
}
