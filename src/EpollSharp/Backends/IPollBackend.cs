using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>One readiness event as a backend reports it: the registration's token, what is ready, and the socket error when the mechanism hands one over with the event.</summary>
internal struct BackendEvent
{
    /// <summary>The token given to <see cref="IPollBackend.Add"/>.</summary>
    public ulong Token;

    /// <summary>What is ready.</summary>
    public Readiness Readiness;

    /// <summary>
    /// The socket's error as the mechanism reported it with this event: kqueue puts the pending error in <c>fflags</c>
    /// with <c>EV_EOF</c>. <see cref="SocketError.Success"/> when the mechanism reported none (epoll and the managed
    /// backend never do: their consumers read <c>SO_ERROR</c>). A backend that reports it writes it on every event it
    /// writes, Success included.
    /// </summary>
    public SocketError SocketError;
}

/// <summary>What a backend is asked to watch: the OS handle, and the <see cref="Socket"/> when the caller registered one.</summary>
internal readonly struct BackendTarget
{
    public BackendTarget(SafeHandle handle, Socket? socket)
    {
        Handle = handle;
        Socket = socket;
    }

    /// <summary>The handle. The loop holds a reference on it (a <see cref="Native.SafeHandleLease"/>) for the duration of each Add/Modify/Remove call, so its value is stable during the call; between calls it may be closed by its owner.</summary>
    public SafeHandle Handle { get; }

    /// <summary>The socket, when one was registered; null for a plain handle.</summary>
    public Socket? Socket { get; }

    /// <summary>The Unix descriptor number.</summary>
    public int FileDescriptor => (int)Handle.DangerousGetHandle();
}

/// <summary>
/// The contract between <see cref="EventLoop"/> and a readiness mechanism (epoll, kqueue, managed).
/// The loop knows nothing else of the mechanism; a backend knows nothing of the loop.
/// </summary>
/// <remarks>
/// Every backend must:
/// <list type="number">
/// <item>Report readiness as (token, <see cref="Readiness"/>) pairs, with the token given when the target was added, never another.</item>
/// <item>Report <see cref="Readiness.Closed"/> and <see cref="Readiness.Error"/> even when the interest is <see cref="Interest.None"/>.</item>
/// <item>Report in <see cref="BackendEvent.SocketError"/> the socket error that the mechanism hands over with an event
///   (kqueue's <c>fflags</c>), because reading <c>SO_ERROR</c> afterwards may find it already consumed (libkqueue reads
///   it to fill in the event); a mechanism that hands over none leaves it <see cref="SocketError.Success"/>.</item>
/// <item>Honour the trigger mode: <see cref="TriggerMode.Level"/> reports on every wait while ready;
///   <see cref="TriggerMode.Edge"/> reports a readiness once until it is renewed (new data, new room);
///   <see cref="TriggerMode.OneShot"/> reports once, then nothing until <see cref="Modify"/> re-arms it.
///   A backend that emulates a mode says how in its doc comment.</item>
/// <item>Report nothing for a target after <see cref="Remove"/> returned.</item>
/// <item>Return from <see cref="Wait"/> after at most the timeout (milliseconds; -1 infinite, 0 poll), and
///   early when <see cref="Wake"/> is called; retry an interrupted wait (EINTR) with the remaining time.</item>
/// <item><see cref="Wake"/> may be called from any thread, any number of times; wake-ups coalesce, and a wake-up that
///   comes before the wait starts makes the next wait return at once (it is never lost). The wake itself is
///   not reported as an event.</item>
/// <item><see cref="Add"/>, <see cref="Modify"/> and <see cref="Remove"/> may be called from any thread, also while
///   another thread waits, and take effect promptly (a backend that needs to restart its wait wakes itself).</item>
/// <item>Allocate nothing in <see cref="Wait"/> and <see cref="Wake"/> once warm.</item>
/// <item>Throw <see cref="ArgumentException"/> (naming "handle") for a target it cannot watch, and
///   <see cref="PlatformNotSupportedException"/> for a feature it cannot provide.</item>
/// </list>
/// </remarks>
internal interface IPollBackend : IDisposable
{
    /// <summary>Which backend this is.</summary>
    EventLoopBackend Kind { get; }

    /// <summary>Starts watching <paramref name="target"/>.</summary>
    void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode);

    /// <summary>Changes the interest or mode of a watched target; also re-arms a one-shot target.</summary>
    void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode);

    /// <summary>Stops watching <paramref name="target"/>. Must be called before the handle is closed.</summary>
    void Remove(BackendTarget target);

    /// <summary>Waits for readiness and writes it to <paramref name="events"/>; returns how many were written.</summary>
    int Wait(Span<BackendEvent> events, int timeoutMilliseconds);

    /// <summary>Makes a current or the next <see cref="Wait"/> return promptly. Thread-safe.</summary>
    void Wake();
}
