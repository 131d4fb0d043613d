using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using EpollSharp.Backends;

namespace EpollSharp;

/// <summary>
/// A handle registered with an <see cref="EventLoop"/>: its interest, trigger mode, callback and state.
/// Dispose it to stop watching the handle.
/// </summary>
/// <remarks>
/// <para>Lifecycle:</para>
/// <list type="number">
/// <item><see cref="EventLoop.Register(Socket, Interest, ReadinessCallback, object?, TriggerMode)"/> creates it, already watching.</item>
/// <item>Dispose the registration before the socket. If the socket is closed first, the kernel stops watching it
///   (epoll and kqueue forget a descriptor when its last reference closes), no further callback comes for it, and
///   <see cref="ChangeInterest(Interest)"/> throws <see cref="ObjectDisposedException"/>; <see cref="Dispose"/> then only frees
///   the registration (it never touches the descriptor number, which may already belong to a new socket).</item>
/// <item>Its callback runs only on the loop thread, only for this handle, and never with <see cref="Readiness.None"/>.</item>
/// <item><see cref="Dispose"/> stops watching; it never closes the handle, which stays its owner's.
///   After <see cref="Dispose"/> returns on the loop thread, the callback is never called again, even for an
///   event already in the batch being dispatched. Called from another thread, the loop may be dispatching
///   this registration at that very moment: one callback that the loop had already begun to start (or is running) may
///   still run, after which none does. Code that must not see that callback disposes on the loop thread
///   (<c>loop.Post(static r => ((Registration)r!).Dispose(), registration)</c>).</item>
/// </list>
/// <para>Every member may be called from any thread.</para>
/// <para>This type holds the registration's state; the work is the loop's. Its methods hand themselves to the
/// <see cref="EventLoop"/> (<see cref="ChangeInterest(Interest)"/> and <see cref="Rearm()"/> to <c>EventLoop.Modify</c>,
/// <see cref="Dispose"/> to <c>EventLoop.Deregister</c>), which changes the state under <see cref="Gate"/> and calls the
/// backend; nothing calls back from the loop into these methods. The path is walked in docs/articles/concepts.md.</para>
/// </remarks>
public sealed class Registration : IDisposable
{
    private readonly ReadinessCallback _callback;
    private int _disposed;

    internal Registration(EventLoop loop, SafeHandle handle, Socket? socket, Interest interest, TriggerMode mode, ReadinessCallback callback, object? state)
    {
        Loop = loop;
        Handle = handle;
        Socket = socket;
        Interest = interest;
        Mode = mode;
        _callback = callback;
        State = state;
    }

    /// <summary>The loop this registration belongs to.</summary>
    public EventLoop Loop { get; }

    /// <summary>The registered handle.</summary>
    public SafeHandle Handle { get; }

    /// <summary>The registered socket, or <see langword="null"/> when a plain handle was registered.</summary>
    public Socket? Socket { get; }

    /// <summary>The current interest.</summary>
    public Interest Interest { get; internal set; }

    /// <summary>The trigger mode chosen at registration.</summary>
    public TriggerMode Mode { get; }

    /// <summary>Your object, passed back through the registration to the callback. May be changed at any time.</summary>
    public object? State { get; set; }

    /// <summary>
    /// A name for reports about this registration, such as <see cref="EventLoop.SlowCallback"/>'s; when null (the default)
    /// they use the text of <see cref="State"/>. Set it from any thread.
    /// </summary>
    public string? Name { get; set; }

    /// <summary>
    /// The socket error that the backend reported together with the readiness being delivered, or
    /// <see cref="System.Net.Sockets.SocketError.Success"/> when it reported none. Meaningful inside the callback, on the
    /// loop thread; <see cref="System.Net.Sockets.SocketError.Success"/> outside it.
    /// </summary>
    /// <remarks>
    /// <para>kqueue hands the socket's pending error over with the event (in <c>fflags</c>, with <c>EV_EOF</c>): a refused
    /// connect, a reset. Over libkqueue on Linux the error is then no longer on the socket (the emulation reads
    /// <c>SO_ERROR</c> to fill in the event, which clears it), so this property is the only place to find it; on macOS
    /// and FreeBSD it is also still pending on the socket.</para>
    /// <para>epoll and the managed backend report readiness without the error: there this property is always
    /// <see cref="System.Net.Sockets.SocketError.Success"/>, and the error is read from the socket
    /// (<see cref="System.Net.Sockets.SocketOptionName.Error"/>), as before. Code that wants the error on every backend
    /// takes this property when it is not Success, and the socket's pending error otherwise.</para>
    /// </remarks>
    public SocketError ReportedSocketError { get; internal set; }

    /// <summary>Whether <see cref="Dispose"/> was called (or the loop was disposed).</summary>
    public bool IsDisposed => System.Threading.Volatile.Read(ref _disposed) != 0;

    /// <summary>The token carried in the kernel's event data: slot in the low 32 bits, generation in the high 32.</summary>
    internal ulong Token { get; set; }

    /// <summary>
    /// The lock that orders the loop's changes to this registration (<c>Modify</c>, <c>Deregister</c>, the hang-up latch)
    /// against each other. A private object of the library: never the registration itself, which the user holds and may
    /// lock on for their own reasons.
    /// </summary>
    internal object Gate { get; } = new();

    /// <summary>
    /// Set once <see cref="Readiness.Closed"/> or <see cref="Readiness.Error"/> was delivered, with nothing readable or
    /// writable, to a level-triggered registration: from then on it is watched edge-triggered, so a hang-up that persists
    /// is not reported in a busy loop. Cleared when the interest is changed to something other than none.
    /// </summary>
    internal bool HangupLatched { get; set; }

    internal BackendTarget Target => new(Handle, Socket);

    /// <summary>The mode the backend applies now.</summary>
    internal TriggerMode EffectiveMode => HangupLatched && Mode == TriggerMode.Level ? TriggerMode.Edge : Mode;

    /// <summary>Changes what this registration is told about. On a one-shot registration this also re-arms it.</summary>
    /// <param name="interest">The new interest.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="interest"/> has undefined bits.</exception>
    /// <exception cref="ObjectDisposedException">The registration or its loop was disposed.</exception>
    public void ChangeInterest(Interest interest) => Loop.Modify(this, interest);

    /// <summary>Re-arms a one-shot registration with its current interest (on other modes it re-applies the interest).</summary>
    /// <exception cref="ObjectDisposedException">The registration or its loop was disposed.</exception>
    public void Rearm() => Loop.Modify(this, Interest);

    /// <summary>Stops watching the handle. Idempotent. See the remarks of <see cref="Registration"/> for the guarantees.</summary>
    public void Dispose() => Loop.Deregister(this);

    /// <summary>Marks the registration disposed; returns false if it already was.</summary>
    internal bool MarkDisposed() => System.Threading.Interlocked.Exchange(ref _disposed, 1) == 0;

    internal void Invoke(Readiness readiness) => _callback(this, readiness);

    /// <summary>The callback, for <see cref="EventLoop.SlowCallback"/> reports.</summary>
    internal ReadinessCallback Callback => _callback;
}
