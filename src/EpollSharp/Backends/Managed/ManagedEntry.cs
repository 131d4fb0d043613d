using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>One target watched by <see cref="ManagedBackend"/>: its socket, what the loop asked for, and what the backend has seen.</summary>
/// <remarks>
/// Three groups of fields, with three owners:
/// <list type="bullet">
/// <item>Fixed at <see cref="Create"/>: the socket, the key, the token, the socket kind.</item>
/// <item>Requested (<see cref="Interest"/>, <see cref="Mode"/>, <see cref="Version"/>, <see cref="Removed"/>, <see cref="Index"/>):
///   owned by <see cref="ManagedRegistry"/>, written by its Add, Modify and Remove on any thread, always under its gate.</item>
/// <item>Applied and observed (the rest): written only by the thread in <see cref="ManagedBackend.Wait"/>. The requested fields are
///   copied to the applied ones (<see cref="ManagedTrigger.ApplyRequest"/>), under the registry's gate, at the start of a wait
///   that follows a change.</item>
/// </list>
/// </remarks>
internal sealed class ManagedEntry
{
    /// <summary>An entry over sockets made by <see cref="Create"/>.</summary>
    private ManagedEntry(SafeHandle handle, Socket socket, Socket poller, IntPtr key, ulong token, bool ownsSocket)
    {
        Handle = handle;
        Socket = socket;
        Poller = poller;
        Key = key;
        Token = token;
        OwnsSocket = ownsSocket;
        CanProbe = !ownsSocket;
        IsStream = socket.SocketType == SocketType.Stream;
    }

    /// <summary>The one <see cref="System.Net.Sockets.Socket"/> object the entry created and must dispose (the wrapper of a plain handle, or the poller of a registered socket); null when it created none.</summary>
    public Socket? OwnedSocket => Owned(Socket, Poller, OwnsSocket);

    /// <summary>An entry for <paramref name="target"/>, with the sockets it needs: a wrapper for a plain handle, a poller for a registered socket.</summary>
    /// <exception cref="ArgumentException">The handle is not a socket.</exception>
    /// <exception cref="PlatformNotSupportedException">A plain handle on a runtime that cannot wrap one (before .NET 5).</exception>
    public static ManagedEntry Create(BackendTarget target, ulong token)
    {
        IntPtr key = target.Handle.DangerousGetHandle();
        bool owns = target.Socket is null;
        Socket socket = target.Socket ?? WrapHandle(target.Handle);
        Socket poller = owns ? socket : CreatePoller(target.Socket!, target.Handle);
        try
        {
            return new ManagedEntry(target.Handle, socket, poller, key, token, ownsSocket: owns);
        }
        catch
        {
            Owned(socket, poller, owns)?.Dispose();
            throw;
        }
    }

    /// <summary>Wraps a plain handle in a non-owning <see cref="System.Net.Sockets.Socket"/>, or explains why it cannot be watched.</summary>
    private static Socket WrapHandle(SafeHandle handle)
    {
        Socket? socket = null;
        try
        {
            socket = ManagedSocketApi.TryWrap(handle.DangerousGetHandle())
                ?? throw new PlatformNotSupportedException(
                    "The managed backend can watch a plain handle only on .NET 5 or later (it wraps the descriptor in a Socket); register the Socket itself.");

            // The constructor accepts a descriptor that is not a socket (it leaves SocketType Unknown); ask the OS.
            _ = socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Type);
            return socket;
        }
        catch (SocketException ex)
        {
            socket?.Dispose();
            throw new ArgumentException(
                "The managed backend watches sockets only, and this handle is not a socket (" + ex.SocketErrorCode.ToString() +
                "): a regular file, pipe, eventfd or other descriptor cannot be polled with managed APIs. Use the epoll or kqueue backend for it.",
                "handle",
                ex);
        }
    }

    /// <summary>A non-owning second <see cref="System.Net.Sockets.Socket"/> over <paramref name="socket"/>'s descriptor, for blocking Selects; the socket itself where that is not possible.</summary>
    private static Socket CreatePoller(Socket socket, SafeHandle handle)
    {
        try
        {
            return ManagedSocketApi.TryWrap(handle.DangerousGetHandle()) ?? socket;
        }
        catch (SocketException)
        {
            return socket;
        }
    }

    /// <summary>Which of the entry's sockets it created: the wrapper when it owns its socket (then the poller is the same object), else a poller distinct from the registered socket.</summary>
    private static Socket? Owned(Socket socket, Socket poller, bool ownsSocket) =>
        ownsSocket ? socket : ReferenceEquals(poller, socket) ? null : poller;

    /// <summary>
    /// The registered handle (the socket's own, or the plain handle). The loop holds no reference on it between calls, so it
    /// may be closed while registered: then the entry is dropped without a report, as the kernel drops a closed descriptor.
    /// </summary>
    public SafeHandle Handle { get; }

    /// <summary>The socket the backend polls: the registered one, or a non-owning wrapper around a registered plain handle.</summary>
    public Socket Socket { get; }

    /// <summary>
    /// The socket the blocking Select (and the watchers) use: a non-owning wrapper of the same descriptor where .NET can make
    /// one, so that a sleeping wait holds no reference on the registered handle. (.NET's <see cref="Socket.Dispose()"/> resets
    /// the connection when another thread holds one; and a descriptor closed while the wait sleeps is released when it wakes.)
    /// Only ever disposed by the waiting thread, when no Select uses it.
    /// </summary>
    public Socket Poller { get; }

    /// <summary>The OS handle value; one entry per value.</summary>
    public IntPtr Key { get; }

    /// <summary>The loop's token for this registration.</summary>
    public ulong Token { get; }

    /// <summary>Whether <see cref="Socket"/> is a wrapper the backend created (and disposes; it does not own the descriptor).</summary>
    public bool OwnsSocket { get; }

    /// <summary>
    /// Whether the backend may call Receive (a one-byte peek) and Send (zero bytes) on the socket, to tell end of stream from
    /// an error and to see a full hang-up. Only for registered <see cref="System.Net.Sockets.Socket"/>s, which the loop requires
    /// to be non-blocking. A wrapper around a plain handle does not know whether the descriptor blocks (.NET refuses synchronous
    /// calls on it when the descriptor is non-blocking), so the backend only selects on it and reads <see cref="Socket.Available"/>.
    /// </summary>
    public bool CanProbe { get; }

    /// <summary>Whether the socket is a byte stream (TCP, Unix stream): only then does "readable with nothing to read" mean end of stream.</summary>
    public bool IsStream { get; }

    // ---- Requested: owned by ManagedRegistry, under its gate. ----

    /// <summary>The interest last asked for.</summary>
    public Interest Interest;

    /// <summary>The trigger mode last asked for.</summary>
    public TriggerMode Mode;

    /// <summary>Incremented by every Add/Modify; the wait applies a change when it differs from <see cref="AppliedVersion"/>.</summary>
    public int Version;

    /// <summary>Set by Remove; a removed entry is never reported again.</summary>
    public bool Removed;

    /// <summary>The position in the registry's live array (for O(1) removal).</summary>
    public int Index;

    // ---- Applied and observed: the waiting thread only. ----

    /// <summary>The interest the wait applies.</summary>
    public Interest AppliedInterest;

    /// <summary>The mode the wait applies.</summary>
    public TriggerMode AppliedMode;

    /// <summary>The <see cref="Version"/> that <see cref="AppliedInterest"/> and <see cref="AppliedMode"/> come from; -1 before the first.</summary>
    public int AppliedVersion = -1;

    /// <summary>One-shot: whether the entry may report (cleared by a report, set by Modify).</summary>
    public bool Armed;

    /// <summary>Edge: what was reported and has been present at every look since (a bit is dropped when it is seen gone).</summary>
    public Readiness Reported;

    /// <summary>Edge: the receive queue's byte count at the last look (-1 when it cannot be measured, e.g. a listener).</summary>
    public int LastAvailable = -1;

    /// <summary>
    /// Edge: the count of bytes that ever arrived on the connection (Linux TCP: <c>tcpi_bytes_received</c>) at the last look
    /// while readable; -1 when not known. Unlike <see cref="LastAvailable"/> it tells new data from old data of the same size.
    /// </summary>
    public long LastArrived = -1;

    /// <summary>Whether the arrival counter can be read for this socket: 0 not yet tried, 1 yes, -1 no (not Linux TCP).</summary>
    public sbyte ArrivalCounter;

    /// <summary>The peer's end of stream (or a reset) was seen; sticky, since a stream cannot reopen.</summary>
    public bool EofSeen;

    /// <summary>A zero-byte send failed: our own sending side is shut too (with <see cref="EofSeen"/>: a full hang-up). Sticky.</summary>
    public bool SendClosed;

    /// <summary>Interest.None: unread data is buffered, so readability says nothing new; leave the socket out of the blocking read list.</summary>
    public bool DataPending;

    /// <summary><see cref="Socket.Available"/> failed with a socket error (a listening socket on Linux); use readability alone.</summary>
    public bool AvailableUnsupported;

    /// <summary>The registered socket or handle was closed (its methods throw <see cref="ObjectDisposedException"/>): never report it, drop it.</summary>
    public bool Dead;

    /// <summary>Queued for eviction by the current scan.</summary>
    public bool EvictQueued;

    /// <summary>The scan holds a reference (DangerousAddRef) on <see cref="Handle"/> while it uses the wrapper <see cref="Socket"/>.</summary>
    public bool HoldsRef;

    // ---- Scratch of one scan. ----

    /// <summary>Put in the read / write / error list of the current Select.</summary>
    public bool InRead, InWrite, InError;

    /// <summary>Reported ready by the current Select.</summary>
    public bool HitRead, HitWrite, HitError;
}
