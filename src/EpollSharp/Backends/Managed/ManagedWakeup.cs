using System;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// How other threads make the managed backend's blocking Select return: the wake socket and the three flags that decide
/// when a byte is written to it. <see cref="Wake"/> and <see cref="AfterChange"/> write only while the waiting thread has
/// announced a block, and at most one byte is outstanding at a time.
/// </summary>
/// <remarks>
/// <para><b>Owner and rule.</b> This type is the only owner of the wake socket and of the flags <c>_blocking</c>,
/// <c>_wakeRequested</c> and <c>_signalPending</c>. No lock: every flag is an int changed with <see cref="Interlocked"/> or read
/// with <see cref="Volatile"/>. <see cref="AnnounceBlock"/>, <see cref="EndBlock"/>, <see cref="TakeRequest"/> and
/// <see cref="Drain"/> are for the thread in <see cref="ManagedBackend.Wait"/>; the rest is for any thread.</para>
/// <para><b>Nothing is lost.</b> The waiting thread announces the block with a full fence and then looks once more for a change
/// or a request; a requester publishes its change or request and then, after a full fence, reads the block flag. So either the
/// waiting thread sees the change, or the requester sees the block and writes the byte. A byte drained before the signal
/// flag is cleared was written by a requester whose request flag is set already, so the wait loop sees it.</para>
/// </remarks>
internal sealed class ManagedWakeup : IDisposable
{
    private readonly ManagedSignalSocket _socket;

    /// <summary>1 while the waiting thread is about to block or blocked in Select: only then do changes and wakes write to the wake socket.</summary>
    private int _blocking;

    /// <summary>Set by <see cref="Wake"/>, consumed by the wait it ends.</summary>
    private int _wakeRequested;

    /// <summary>1 while a byte was sent to the wake socket and not yet drained: coalesces wake-ups.</summary>
    private int _signalPending;

    /// <summary>Creates the wake socket.</summary>
    /// <exception cref="PlatformNotSupportedException">No loopback TCP connection can be made (the backend wakes itself through one).</exception>
    public ManagedWakeup()
    {
        try
        {
            _socket = ManagedSignalSocket.Create();
        }
        catch (SocketException ex)
        {
            throw new PlatformNotSupportedException(
                "The managed backend wakes its Select through a loopback TCP connection, and none could be made here (" + ex.SocketErrorCode.ToString() + ").",
                ex);
        }
    }

    /// <summary>The socket the loop's own blocking Select starts its read list with.</summary>
    public Socket Receiver => _socket.Receiver;

    /// <summary>Whether a wake-up was requested and not yet consumed.</summary>
    public bool IsRequested => Volatile.Read(ref _wakeRequested) != 0;

    /// <summary>Requests a wake-up: the current wait returns, or the next one does at once. Any thread.</summary>
    public void Wake()
    {
        Interlocked.Exchange(ref _wakeRequested, 1);
        if (Volatile.Read(ref _blocking) != 0)
        {
            Signal();
        }
    }

    /// <summary>Called after a registration changed (and the registry marked its snapshot stale): restarts a blocked wait. Any thread.</summary>
    public void AfterChange()
    {
        // Pairs with the Interlocked.Exchange in AnnounceBlock: either the wait sees the change, or this sees _blocking.
        Thread.MemoryBarrier();
        if (Volatile.Read(ref _blocking) != 0)
        {
            Signal();
        }
    }

    /// <summary>Makes the wake socket readable, unless a byte is outstanding already. Any thread.</summary>
    /// <exception cref="ObjectDisposedException">The backend was disposed.</exception>
    public void Signal()
    {
        if (Interlocked.Exchange(ref _signalPending, 1) == 0)
        {
            _socket.Signal();
        }
    }

    /// <summary>Consumes a requested wake-up; returns whether there was one. The waiting thread.</summary>
    public bool TakeRequest() => Interlocked.Exchange(ref _wakeRequested, 0) != 0;

    /// <summary>Announces that the waiting thread is about to block (a full fence). The waiting thread, before its last look.</summary>
    public void AnnounceBlock() => Interlocked.Exchange(ref _blocking, 1);

    /// <summary>Ends the announcement of <see cref="AnnounceBlock"/>. The waiting thread.</summary>
    public void EndBlock() => Volatile.Write(ref _blocking, 0);

    /// <summary>Reads the outstanding byte and lets the next signal write a new one. The waiting thread, after its Select saw the wake socket.</summary>
    public void Drain()
    {
        // Drain first, then clear the flag: a signal whose byte this drain took has set its request flag already,
        // so the wait loop sees it; a signal after the clear sends a new byte.
        _socket.Drain();
        Interlocked.Exchange(ref _signalPending, 0);
    }

    /// <summary>Closes the wake socket.</summary>
    public void Dispose() => _socket.Dispose();
}
