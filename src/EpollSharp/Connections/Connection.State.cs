using System;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    /// <summary>The connection's state bits (<see cref="ConnectionFlags"/>), written only by the transitions below.</summary>
    /// <remarks>
    /// An <see cref="int"/>, not the enum, so that <see cref="IsClosed"/> can read it with <see cref="Volatile"/>
    /// from any thread. Only the loop thread writes it (and the thread of <see cref="CloseOnDeadLoop"/>, once the loop no
    /// longer runs), so a plain read-modify-write loses nothing.
    /// </remarks>
    private int _flags;

    /// <summary>How many calls into the connection (<see cref="Guarded{TArg}"/>) are running on the loop thread's stack.</summary>
    private int _depth;

    /// <summary>
    /// The body of a call into the connection, run by <see cref="Guarded{TArg}"/>: always a static lambda (cached by the
    /// compiler, so calling one allocates nothing).
    /// </summary>
    /// <typeparam name="TArg">The argument passed through.</typeparam>
    /// <param name="connection">The connection.</param>
    /// <param name="arg">The argument.</param>
    /// <param name="data">The bytes of a <see cref="Write(ReadOnlySpan{byte})"/>, empty for the other calls (a span cannot be a type argument on the targets this library builds for).</param>
    /// <returns>The call's result (only <see cref="Write(ReadOnlySpan{byte})"/> has one; the others return <see langword="true"/>).</returns>
    private delegate bool GuardedBody<TArg>(Connection connection, TArg arg, ReadOnlySpan<byte> data);

    /// <summary>
    /// The connection's state, one word of named bits declared once (as libuv keeps a handle's state in its flags). The
    /// bits fall into three groups — lifetime, input, output — plus the bookkeeping of work that is running or deferred.
    /// They are bits and not three enums because the states of one group are not one chain: receiving can be paused in
    /// any input state, and a close can be requested whatever the output does. Each bit is set by the transitions of
    /// <c>Connection.State.cs</c> only; the rest of the class reads them with <see cref="Has"/>.
    /// </summary>
    [Flags]
    private enum ConnectionFlags
    {
        /// <summary>Created: not started yet.</summary>
        None = 0,

        /// <summary>Lifetime: <see cref="Start"/> registered the socket; the handler's callbacks may run (<see cref="MarkStarted"/>).</summary>
        Started = 1 << 0,

        /// <summary>Lifetime: a graceful <see cref="Close()"/> is under way (<see cref="TryRequestClose"/>).</summary>
        CloseRequested = 1 << 1,

        /// <summary>Lifetime: ended, socket closed, the last state (<see cref="TryMarkClosed"/>). Read from any thread by <see cref="IsClosed"/>.</summary>
        Closed = 1 << 2,

        /// <summary>Input: <see cref="PauseReceiving"/> is in effect (<see cref="SetReceivingPaused"/>).</summary>
        ReceivingPaused = 1 << 3,

        /// <summary>Input: a graceful close has delivered what had arrived; from now on reads are discarded (<see cref="TryEndInputDelivery"/>).</summary>
        InputEnded = 1 << 4,

        /// <summary>Input: the end of stream was read; nothing more will arrive (<see cref="MarkReadClosed"/>). <see cref="IsReadClosed"/>.</summary>
        ReadClosed = 1 << 5,

        /// <summary>Input: the backend reported the peer's half-close or a hang-up: read on to the end of stream in every pass from now on (<see cref="NoteReadiness"/>).</summary>
        HangupSeen = 1 << 6,

        /// <summary>Input: the backend reported an error: an end of stream read from now on is a reset whose error code was consumed (<see cref="NoteReadiness"/>).</summary>
        ErrorSeen = 1 << 7,

        /// <summary>Output: shut down, or to be once the backlog is flushed; writes are refused (<see cref="TryRequestOutputShutdown"/>). <see cref="IsWriteClosed"/>.</summary>
        OutputShutdownRequested = 1 << 8,

        /// <summary>Output: the sending side is shut down (FIN sent) (<see cref="MarkOutputShut"/>).</summary>
        OutputShut = 1 << 9,

        /// <summary>Output: backpressure is on, between the high and the low watermark (<see cref="TryPauseWrites"/>, <see cref="TryResumeWrites"/>).</summary>
        WritePaused = 1 << 10,

        /// <summary>Bookkeeping: a <see cref="ReceivePass"/> is running (a callback inside it must not start another).</summary>
        InReceivePass = 1 << 11,

        /// <summary>Bookkeeping: a receive continuation is posted to the loop (edge-triggered: no new edge would come).</summary>
        ContinuationPosted = 1 << 12,

        /// <summary>Bookkeeping: the wanted interest may have changed; the outermost <see cref="Exit"/> applies it.</summary>
        InterestDirty = 1 << 13,

        /// <summary>Bookkeeping: the connection closed inside a call; the outermost <see cref="Exit"/> calls <see cref="ConnectionHandler.OnClosed"/>.</summary>
        NotifyClosedPending = 1 << 14,

        /// <summary>Bookkeeping: a graceful shutdown reached the connection before it started; <see cref="Start"/> passes it on.</summary>
        ShutdownRequestPending = 1 << 15,

        /// <summary>Setup: the socket came non-blocking from the backend's accept; <see cref="ApplySocketOptions"/> does not set it again.</summary>
        NonBlockingAlready = 1 << 16,
    }

    /// <summary>Whether backpressure is on: the backlog reached <see cref="ConnectionOptions.HighWatermark"/> and has not yet drained to <see cref="ConnectionOptions.LowWatermark"/>.</summary>
    public bool IsWritePaused => Has(ConnectionFlags.WritePaused);

    /// <summary>Whether <see cref="PauseReceiving"/> is in effect.</summary>
    public bool IsReceivingPaused => Has(ConnectionFlags.ReceivingPaused);

    /// <summary>Whether the peer shut down its sending side (end of stream was read): no more data will arrive.</summary>
    public bool IsReadClosed => Has(ConnectionFlags.ReadClosed);

    /// <summary>Whether this side's output is shut down or will be once the backlog is flushed (<see cref="Shutdown"/> or <see cref="Close()"/>); writes are refused.</summary>
    public bool IsWriteClosed => Has(ConnectionFlags.OutputShutdownRequested);

    /// <summary>Whether a graceful <see cref="Close()"/> is in progress.</summary>
    public bool IsClosing => (_flags & (int)(ConnectionFlags.CloseRequested | ConnectionFlags.Closed)) == (int)ConnectionFlags.CloseRequested;

    /// <summary>Whether the connection has ended; its socket is closed.</summary>
    public bool IsClosed => (Volatile.Read(ref _flags) & (int)ConnectionFlags.Closed) != 0;

    /// <summary>Whether reading goes on: the end of stream has not been read, and receiving is not paused (a close that ended the input reads on, to discard).</summary>
    private bool WantsToRead => !Has(ConnectionFlags.ReadClosed) && (Has(ConnectionFlags.InputEnded) || !Has(ConnectionFlags.ReceivingPaused));

    /// <summary>Whether any of <paramref name="bits"/> is set.</summary>
    private bool Has(ConnectionFlags bits) => (_flags & (int)bits) != 0;

    /// <summary>Sets <paramref name="bits"/>. Only the transitions below call it.</summary>
    private void Set(ConnectionFlags bits) => _flags |= (int)bits;

    /// <summary>Clears <paramref name="bits"/>. Only the transitions below call it.</summary>
    private void Clear(ConnectionFlags bits) => _flags &= ~(int)bits;

    /// <summary>Sets <paramref name="bit"/> if it is clear; false, and no change, when it was already set. Only the transitions below call it.</summary>
    private bool TrySet(ConnectionFlags bit)
    {
        if (Has(bit))
        {
            return false;
        }

        Set(bit);
        return true;
    }

    // Lifetime: Created -> Started -> (CloseRequested) -> Closed. Closed can follow any state, and is final.

    /// <summary>Created → <see cref="ConnectionFlags.Started"/>, once, in <see cref="Start"/> after the socket is registered.</summary>
    private void MarkStarted() => Set(ConnectionFlags.Started);

    /// <summary>
    /// Open → <see cref="ConnectionFlags.CloseRequested"/> (and the interest is re-evaluated: a close reads on only to drain).
    /// From any state but Closed; false, and no change, when a close was already requested.
    /// </summary>
    private bool TryRequestClose()
    {
        bool requested = TrySet(ConnectionFlags.CloseRequested);
        if (requested)
        {
            MarkInterestDirty();
        }

        return requested;
    }

    /// <summary>
    /// Any state → <see cref="ConnectionFlags.Closed"/>, the final one: written with release semantics, since
    /// <see cref="IsClosed"/> is read from other threads. False, and no change, when already closed.
    /// </summary>
    private bool TryMarkClosed()
    {
        if (Has(ConnectionFlags.Closed))
        {
            return false;
        }

        Volatile.Write(ref _flags, _flags | (int)ConnectionFlags.Closed);
        return true;
    }

    // Input: Open <-> ReceivingPaused; then InputEnded (a close drained it) and/or ReadClosed (end of stream). HangupSeen and
    // ErrorSeen are sticky notes of what the backend reported.

    /// <summary>Open ↔ <see cref="ConnectionFlags.ReceivingPaused"/>, from an open connection (the interest is re-evaluated).</summary>
    private void SetReceivingPaused(bool paused)
    {
        if (paused)
        {
            Set(ConnectionFlags.ReceivingPaused | ConnectionFlags.InterestDirty);
        }
        else
        {
            Clear(ConnectionFlags.ReceivingPaused);
            Set(ConnectionFlags.InterestDirty);
        }
    }

    /// <summary>Notes a reported hang-up (<see cref="ConnectionFlags.HangupSeen"/>) or error (<see cref="ConnectionFlags.ErrorSeen"/>); once set they stay.</summary>
    private void NoteReadiness(Readiness readiness)
    {
        const Readiness Trouble = Readiness.Closed | Readiness.Error;
        if ((readiness & (Readiness.ReadClosed | Trouble)) != 0)
        {
            Set(ConnectionFlags.HangupSeen);
        }

        if ((readiness & Readiness.Error) != 0)
        {
            Set(ConnectionFlags.ErrorSeen);
        }
    }

    /// <summary>
    /// <see cref="ConnectionFlags.CloseRequested"/> → <see cref="ConnectionFlags.InputEnded"/>: the socket had nothing more,
    /// so the close stops delivering input. False, and no change, without a close or when the input had already ended.
    /// </summary>
    private bool TryEndInputDelivery()
    {
        if (!Has(ConnectionFlags.CloseRequested) || Has(ConnectionFlags.InputEnded))
        {
            return false;
        }

        Set(ConnectionFlags.InputEnded);
        return true;
    }

    /// <summary>Reading → <see cref="ConnectionFlags.ReadClosed"/>: the end of stream was read (the interest is re-evaluated).</summary>
    private void MarkReadClosed() => Set(ConnectionFlags.ReadClosed | ConnectionFlags.InterestDirty);

    // Output: Open -> OutputShutdownRequested -> OutputShut; WritePaused comes and goes while the output is open or flushing.

    /// <summary>
    /// Open → <see cref="ConnectionFlags.OutputShutdownRequested"/> (<see cref="Shutdown"/>, or a close whose input has
    /// ended): writes are refused from now on. False, and no change, when already requested.
    /// </summary>
    private bool TryRequestOutputShutdown() => TrySet(ConnectionFlags.OutputShutdownRequested);

    /// <summary><see cref="ConnectionFlags.OutputShutdownRequested"/> → <see cref="ConnectionFlags.OutputShut"/>: the FIN went out.</summary>
    private void MarkOutputShut() => Set(ConnectionFlags.OutputShut);

    /// <summary>→ <see cref="ConnectionFlags.WritePaused"/> at the high watermark; false, and no change, when already paused.</summary>
    private bool TryPauseWrites() => TrySet(ConnectionFlags.WritePaused);

    /// <summary><see cref="ConnectionFlags.WritePaused"/> → not paused at the low watermark; false, and no change, when not paused.</summary>
    private bool TryResumeWrites() => Take(ConnectionFlags.WritePaused);

    // Bookkeeping: work running now, or left for later.

    /// <summary>→ <see cref="ConnectionFlags.InReceivePass"/>; false when a pass is already running (it goes on instead).</summary>
    private bool TryBeginReceivePass() => TrySet(ConnectionFlags.InReceivePass);

    /// <summary><see cref="ConnectionFlags.InReceivePass"/> → none: the pass is over.</summary>
    private void EndReceivePass() => Clear(ConnectionFlags.InReceivePass);

    /// <summary>Sets or clears <see cref="ConnectionFlags.ContinuationPosted"/>: set when the loop took the continuation, cleared when it runs.</summary>
    private void SetContinuationPosted(bool posted)
    {
        if (posted)
        {
            Set(ConnectionFlags.ContinuationPosted);
        }
        else
        {
            Clear(ConnectionFlags.ContinuationPosted);
        }
    }

    /// <summary>→ <see cref="ConnectionFlags.InterestDirty"/>: the outermost <see cref="Exit"/> applies the interest.</summary>
    private void MarkInterestDirty() => Set(ConnectionFlags.InterestDirty);

    /// <summary>→ <see cref="ConnectionFlags.ShutdownRequestPending"/>: a shutdown request came before <see cref="Start"/>.</summary>
    private void DeferShutdownRequest() => Set(ConnectionFlags.ShutdownRequestPending);

    /// <summary>Clears <paramref name="bit"/> if it is set; true when it was (for a bit of deferred work: the work is now the caller's to do).</summary>
    private bool Take(ConnectionFlags bit)
    {
        if (!Has(bit))
        {
            return false;
        }

        Clear(bit);
        return true;
    }

    /// <summary>
    /// Runs <paramref name="body"/> as a call into the connection (a public method or a callback from the loop): inside
    /// <see cref="Enter"/> and <see cref="Exit"/>, so that interest changes and the closed notification wait for the
    /// outermost call; and if it throws, the connection is reset (<see cref="ConnectionCloseReason.HandlerFault"/>) before the
    /// exception goes on to the loop. Allocates nothing.
    /// </summary>
    /// <typeparam name="TArg">The argument's type.</typeparam>
    /// <param name="body">A static lambda.</param>
    /// <param name="arg">Passed to <paramref name="body"/>.</param>
    /// <param name="data">Passed to <paramref name="body"/> (the bytes of a write).</param>
    /// <returns>What <paramref name="body"/> returned.</returns>
    private bool Guarded<TArg>(GuardedBody<TArg> body, TArg arg, ReadOnlySpan<byte> data = default)
    {
        Enter();
        try
        {
            return body(this, arg, data);
        }
        catch
        {
            Fault();
            throw;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Enters a call: interest changes and the closed notification wait until the outermost one exits.</summary>
    private void Enter() => _depth++;

    /// <summary>Leaves a call; the outermost one applies a changed interest and makes a deferred <see cref="ConnectionHandler.OnClosed"/> call.</summary>
    private void Exit()
    {
        if (--_depth != 0)
        {
            return;
        }

        if (Take(ConnectionFlags.InterestDirty))
        {
            ApplyInterest();
        }

        if (Take(ConnectionFlags.NotifyClosedPending))
        {
            CallOnClosed();
        }
    }

    /// <summary>A callback threw: reset the connection; the caller rethrows to the loop.</summary>
    private void Fault()
    {
        if (!Has(ConnectionFlags.Closed))
        {
            FinishClose(ConnectionCloseReason.HandlerFault, SocketError.Success, abortive: true);
        }
    }

    /// <summary>The connection closed: calls <see cref="ConnectionHandler.OnClosed"/> now, or, inside a call, when the outermost one exits (<see cref="ConnectionFlags.NotifyClosedPending"/>).</summary>
    private void NotifyClosed()
    {
        if (_depth > 0)
        {
            Set(ConnectionFlags.NotifyClosedPending);
        }
        else
        {
            CallOnClosed();
        }
    }

    /// <summary>
    /// Calls <see cref="ConnectionHandler.OnClosed"/>, then tells the listener (which untracks the connection, and completes a
    /// drained shutdown), or for a dialed connection removes its loop-release hook, even when the handler throws.
    /// </summary>
    private void CallOnClosed()
    {
        _stats.OnClosed(CloseReason);
        if (CloseReason is not (ConnectionCloseReason.Completed or ConnectionCloseReason.Aborted))
        {
            ConnectionLog.ConnectionFailed(_settings.Logger, Id, RemoteEndPoint, CloseReason, SocketError);
        }

        try
        {
            _handler.OnClosed(this);
        }
        finally
        {
            Listener?.OnConnectionClosed(this);
            ForgetDialed();
        }
    }
}
