using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using EpollSharp.Backends;
using EpollSharp.Native;

namespace EpollSharp.Connections;

// Accepting with completions: on a loop whose backend does the I/O itself (io_uring's completion path), the listener arms
// one multishot accept instead of a readiness registration; each accepted stream arrives as a completion with its new
// descriptor, which goes straight to the connection path. Pausing cancels the accept, resuming arms it again; stopping
// cancels it and waits for its final completion before the socket is closed, so the address is free when it returns.
public sealed partial class ConnectionListener : IAcceptSink
{
    private static readonly Action<object?> s_startAccept = static state => ((ConnectionListener)state!).StartAcceptingOnLoop();

    /// <summary>The loop's completion I/O when the listener accepts with it; null when it accepts through readiness.</summary>
    private readonly ICompletionIo? _acceptIo;

    // Loop-thread state of the completion path.
    private AcceptChannel? _acceptChannel;

    /// <summary>Sockets the kernel accepted while the listener was pausing (at the limit): admitted first when it resumes.</summary>
    private Queue<Socket>? _parked;

    /// <summary>Whether the listener accepts with a multishot accept (io_uring's completion path) rather than readiness.</summary>
    internal bool AcceptsWithCompletions => _acceptIo is not null;

    /// <summary>Accepts that came as completions (for tests and diagnostics); read on the loop thread.</summary>
    internal long CompletionAccepts => _acceptChannel?.Accepts ?? 0;

    /// <summary>Whether a multishot accept is armed (for tests); read on the loop thread.</summary>
    internal bool AcceptMultishotArmed => _acceptChannel is { AcceptArmed: true, AcceptMultishot: true };

    /// <summary>How many armed accepts ended (for tests): a multishot one only ends when cancelled or on an error; read on the loop thread.</summary>
    internal int AcceptEnds { get; private set; }

    /// <summary>The completion I/O to accept with on <paramref name="loop"/>, or null for readiness.</summary>
    private static ICompletionIo? AcceptIoFor(EventLoop loop) => CanWrapDescriptors ? loop.CompletionIo : null;

    /// <summary>Opens the accept channel and arms the accept (loop thread).</summary>
    private void StartAcceptingOnLoop()
    {
        if (_stopped || _acceptChannel is not null)
        {
            return;
        }

        // Out of descriptors, the listener sheds a pending connection with Socket.Accept, whose first call initialises
        // IPAddress, which loads an assembly (a descriptor): the readiness path's accepts did that long before; do it now.
        GC.KeepAlive(System.Net.IPAddress.IPv6Any);
        SafeHandle? handle = SocketHandles.TryGetSafeHandle(_socket);
        if (handle is null)
        {
            return;
        }

        try
        {
            _acceptChannel = _acceptIo!.OpenAccept(handle, this);
        }
        catch (ObjectDisposedException)
        {
            // The loop is being released; its release hook stops the listener.
            return;
        }

        if (Volatile.Read(ref _pauseKind) == NotPaused)
        {
            _acceptIo.StartAccept(_acceptChannel, MultishotFits());
        }
    }

    /// <summary>
    /// Whether a multishot accept may run: it accepts whatever arrives, before the listener can check its budget, up to a
    /// listen queue's worth (and what arrives meanwhile) before a cancellation takes effect. So it runs only while more
    /// than <see cref="ListenerOptions.Backlog"/> + <see cref="ListenerOptions.MaxAcceptsPerEvent"/> connections fit in the
    /// budget; nearer the limit, the listener accepts one connection per armed accept, and never holds more than one
    /// beyond the limit (kept aside until there is room).
    /// </summary>
    private bool MultishotFits() => (long)_budget.Max - _budget.Count > (long)_options.Backlog + _options.MaxAcceptsPerEvent;

    /// <inheritdoc/>
    void IAcceptSink.OnAcceptCompleted(int result, bool more)
    {
        try
        {
            if (result >= 0)
            {
                OnAccepted(result);
            }
            else if ((result == -Interop.Errno.EMFILE || result == -Interop.Errno.ENFILE) && _acceptIo!.AcceptWaitsForPending && !_socket.Poll(0, SelectMode.SelectRead))
            {
                // The kernel takes the descriptor before it looks for a connection (a multishot accept tries again right
                // after each one): with none pending, this took none. Armed again below, the accept waits for one first,
                // as the readiness path waits for its socket to be readable.
            }
            else if (result != -Interop.Errno.ECANCELED && !_stopped)
            {
                // As .NET's accept reports them: ENOMEM is a shortage like ENOBUFS.
                SocketError error = result == -Interop.Errno.ENOMEM ? SocketError.NoBufferSpaceAvailable : SocketErrors.FromLinuxErrno(-result);
                if (Volatile.Read(ref _pauseKind) == NotPaused)
                {
                    OnAcceptError(error);
                }
            }
        }
        finally
        {
            if (!more)
            {
                AcceptEnds++;
            }

            // Even when a handler's callback (OnAcceptPaused, OnAcceptResumed) threw: an accept that ended and is not
            // armed again would stop the listener for good, where a readiness registration stays armed.
            if (!more)
            {
                RearmIfAccepting();
            }
        }
    }

    /// <summary>A descriptor the kernel accepted: admitted, or parked while the listener pauses.</summary>
    private void OnAccepted(int fd)
    {
        Socket accepted;
        try
        {
            accepted = WrapAccepted(fd);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Not wrapped (the handle was let go): nothing of it is open here any more.
            return;
        }

        if (_stopped)
        {
            accepted.Dispose();
            return;
        }

        if (Volatile.Read(ref _pauseKind) != NotPaused)
        {
            Park(accepted);
            return;
        }

        if (!_budget.TryAcquire())
        {
            Park(accepted);
            Pause(AcceptPauseReason.ConnectionLimit, SocketError.Success, shed: 0);
            return;
        }

        try
        {
            EndEpisode();
        }
        finally
        {
            Admit(accepted, nonBlocking: true);
            if (_acceptChannel is { AcceptArmed: true, AcceptMultishot: true } && !_stopped && !MultishotFits())
            {
                // Near the limit: the multishot accept ends (its final completion arms a single one).
                _acceptIo!.CancelAccept(_acceptChannel);
            }
        }
    }

    private void Park(Socket accepted)
    {
        _parked ??= new Queue<Socket>();
        _parked.Enqueue(accepted);
    }

    /// <summary>Arms the accept again when it ended while the listener accepts (the kernel ended it, or a cancelled one finished after a resume).</summary>
    private void RearmIfAccepting()
    {
        if (!_stopped && _acceptChannel is not null && Volatile.Read(ref _pauseKind) == NotPaused)
        {
            _acceptIo!.StartAccept(_acceptChannel, MultishotFits());
        }
    }

    /// <summary>Pausing: the armed accept is cancelled (its final completion follows; a socket it still accepted is parked).</summary>
    private void PauseAcceptCompletions()
    {
        if (_acceptChannel is not null)
        {
            _acceptIo!.CancelAccept(_acceptChannel);
        }
    }

    /// <summary>
    /// Resuming: admits the parked sockets while the budget allows, then, still accepting, ends the episode when nothing is
    /// pending (as the readiness path's first pass does) and arms the accept.
    /// </summary>
    private void ResumeAcceptCompletions()
    {
        while (_parked is { Count: > 0 })
        {
            if (!_budget.TryAcquire())
            {
                Pause(AcceptPauseReason.ConnectionLimit, SocketError.Success, shed: 0);
                return;
            }

            Socket accepted = _parked.Dequeue();
            try
            {
                EndEpisode();
            }
            finally
            {
                Admit(accepted, nonBlocking: true);
            }

            if (_stopped || Volatile.Read(ref _pauseKind) != NotPaused)
            {
                return;
            }
        }

        if (_episode is not null && !_socket.Poll(0, SelectMode.SelectRead))
        {
            EndEpisode();
        }

        if (_acceptChannel is null)
        {
            StartAcceptingOnLoop();
        }
        else
        {
            _acceptIo!.StartAccept(_acceptChannel, MultishotFits());
        }
    }

    /// <summary>Stopping: cancels the accept and waits for its final completion (so the kernel lets go of the socket), drops the parked sockets.</summary>
    private void StopAcceptCompletions()
    {
        if (_acceptChannel is not null)
        {
            _acceptIo!.CloseAccept(_acceptChannel);
        }

        while (_parked is { Count: > 0 })
        {
            _parked.Dequeue().Dispose();
        }
    }
}
