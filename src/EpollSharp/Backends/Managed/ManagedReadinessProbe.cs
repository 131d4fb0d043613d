using System;
using System.Net.Sockets;

namespace EpollSharp.Backends;

/// <summary>
/// Finds out what a registration is ready for, from the hit flags of a Select and a few more questions to its socket:
/// <see cref="Socket.Available"/>, <c>Poll(0, SelectError)</c>, a one-byte peek, a zero-byte send. (Whether new data arrived,
/// which edge mode also needs, is <see cref="ManagedArrivalCounter"/>'s question.)
/// </summary>
/// <remarks>
/// <para>Readable: the read list, with <see cref="Socket.Available"/> &gt; 0, or a listener, or a datagram socket.
///   Readable with nothing buffered on a stream: a pending error (Poll SelectError, asked before anything reads, because a read
///   or peek consumes it) means <see cref="Readiness.Error"/> | <see cref="Readiness.Closed"/> (a reset); otherwise a one-byte peek:
///   0 = end of stream (<see cref="Readiness.Readable"/> | <see cref="Readiness.ReadClosed"/>), an error = a reset, not connected = a
///   listener. <see cref="Readiness.Closed"/> without an error: end of stream and a zero-byte send fails (our side is shut too:
///   the full hang-up of EPOLLHUP). Error: the error list (POLLERR on Unix, a failed connect on Windows) for registrations not in
///   the read list. Closed and Error are reported whatever the interest.</para>
/// <para><b>Owner and rule.</b> Used only by the scan, on the thread in <see cref="ManagedBackend.Wait"/>: it owns its scratch
///   buffer and writes only the entries' observed fields, which are that thread's. No lock.</para>
/// </remarks>
internal sealed class ManagedReadinessProbe
{
    private readonly byte[] _probe = new byte[1];

    /// <summary>
    /// What <paramref name="e"/> is ready for, restricted to its interest plus <see cref="Readiness.Closed"/> and <see cref="Readiness.Error"/>
    /// (reporting anything else would use up a one-shot, or an edge, on readiness the loop then filters out).
    /// </summary>
    /// <param name="e">The entry, with the hit flags of this scan.</param>
    /// <param name="available">The receive queue's byte count; 0 when not readable; -1 when unknown.</param>
    public Readiness Classify(ManagedEntry e, out int available)
    {
        available = -1;
        if (e.Dead)
        {
            return Readiness.None;
        }

        bool wantRead = (e.AppliedInterest & Interest.Readable) != 0;
        Readiness r = Readiness.None;
        if (e.EofSeen)
        {
            available = 0;
            if (wantRead)
            {
                r |= Readiness.Readable | Readiness.ReadClosed;
            }

            if (!e.HitError && SendSideClosed(e))
            {
                r |= Readiness.Closed;
            }
        }
        else if (e.HitRead)
        {
            available = ReadAvailable(e);
            if (available > 0)
            {
                if (wantRead)
                {
                    r |= Readiness.Readable;
                }
                else
                {
                    e.DataPending = true;
                }
            }
            else if (available == 0 && e.IsStream)
            {
                if (!e.InError)
                {
                    // Not in this scan's error list: ask now, before anything reads from the socket.
                    e.HitError = PollError(e);
                }

                r |= ReadableButEmpty(e, wantRead, ref available);
            }
            else if (wantRead)
            {
                // A listener (Available fails there on Linux) or a datagram socket (a zero-length datagram is data).
                r |= Readiness.Readable;
            }
        }
        else if (e.InRead)
        {
            available = e.AvailableUnsupported ? -1 : 0;
            e.DataPending = false;
        }

        if (e.HitError)
        {
            r |= e.IsStream ? Readiness.Error | Readiness.Closed : Readiness.Error;
        }

        if (e.HitWrite)
        {
            r |= Readiness.Writable;
        }

        return e.Dead ? Readiness.None : r;
    }

    /// <summary>Whether an error is pending (POLLERR on Unix), without consuming it as a read or SO_ERROR would.</summary>
    private static bool PollError(ManagedEntry e)
    {
        try
        {
            return e.Socket.Poll(0, SelectMode.SelectError);
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>The receive queue's byte count; -1 when it cannot be read (a listener on Linux, a closed socket).</summary>
    private static int ReadAvailable(ManagedEntry e)
    {
        if (e.AvailableUnsupported)
        {
            return -1;
        }

        try
        {
            return e.Socket.Available;
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return -1;
        }
        catch (SocketException)
        {
            // FIONREAD on a listening socket fails on Linux (EINVAL). Asked once per registration.
            e.AvailableUnsupported = true;
            return -1;
        }
    }

    /// <summary>A stream socket that Select calls readable has nothing buffered: end of stream, a reset, a listener, or nothing.</summary>
    private Readiness ReadableButEmpty(ManagedEntry e, bool wantRead, ref int available)
    {
        Readiness readSide = wantRead ? Readiness.Readable | Readiness.ReadClosed : Readiness.None;
        if (e.HitError)
        {
            // A pending error (a reset): the read side is finished. Do not peek: that would consume the error.
            // (Error and Closed are added by the caller.)
            e.EofSeen = true;
            return readSide;
        }

        if (!e.CanProbe)
        {
            // A wrapper around a plain handle: never read from it. On a stream, readable with nothing buffered and no
            // error pending is end of stream.
            e.EofSeen = true;
            return readSide;
        }

        int n;
        SocketError error;
        try
        {
            n = e.Socket.Receive(_probe, 0, 1, SocketFlags.Peek, out error);
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return Readiness.None;
        }

        switch (error)
        {
            case SocketError.Success when n > 0:
                // Data arrived since Available was read.
                available = -1;
                if (wantRead)
                {
                    return Readiness.Readable;
                }

                e.DataPending = true;
                return Readiness.None;
            case SocketError.Success:
                e.EofSeen = true;
                return SendSideClosed(e) ? readSide | Readiness.Closed : readSide;
            case SocketError.WouldBlock:
                // Spurious: someone else read it first.
                return Readiness.None;
            case SocketError.NotConnected:
                // A listener (Windows) or a socket not yet connected.
                return wantRead ? Readiness.Readable : Readiness.None;
            default:
                e.EofSeen = true;
                return readSide | Readiness.Error | Readiness.Closed;
        }
    }

    /// <summary>Whether our own sending side is shut (a zero-byte send fails): with end of stream, that is a full hang-up.</summary>
    private bool SendSideClosed(ManagedEntry e)
    {
        if (e.SendClosed || !e.IsStream || !e.CanProbe)
        {
            return e.SendClosed;
        }

        try
        {
            e.Socket.Send(_probe, 0, 0, SocketFlags.None, out SocketError error);
            if (error is SocketError.Shutdown or SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.NotConnected)
            {
                e.SendClosed = true;
            }
        }
        catch (ObjectDisposedException)
        {
            e.Dead = true;
            return true;
        }

        return e.SendClosed;
    }
}
