using System;
using System.Collections.Generic;
using System.Net;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>
/// Several event loops, one thread each, serving the same listeners: the way to use many cores. Connections are spread over
/// the loops (see <see cref="GroupAcceptMode"/>) and each stays on its loop for its whole life.
/// </summary>
/// <remarks>
/// <para>Every member may be called from any thread.</para>
/// <para>Shut down with <see cref="ShutdownAsync"/> (stop accepting, let connections finish until a deadline, reset the rest,
/// then stop the loops), or <see cref="Dispose"/> (reset everything now and stop the loops).</para>
/// <para>A loop of the group that ends on its own (a callback threw and no <see cref="EventLoopOptions.UnhandledExceptionHandler"/>
/// took the exception, or someone called its <see cref="EventLoop.Stop"/>) is disposed by the group at once: its connections are
/// reset (<see cref="ConnectionCloseReason.LoopDisposed"/>) and, if it was the accepting loop, its listener closes. The other loops
/// go on; <see cref="Completion"/> reports the exception once every loop has ended, and <see cref="ShutdownAsync"/> and
/// <see cref="Dispose"/> still complete.</para>
/// </remarks>
public sealed class EventLoopGroup : IDisposable
{
    private readonly EventLoop[] _loops;
    private readonly List<ConnectionListener> _listeners = new();
    private int _next = -1;
    private int _disposed;

    /// <summary>
    /// Creates <paramref name="loopCount"/> loops and starts each on its own background thread, named
    /// <see cref="EventLoopOptions.ThreadName"/> followed by the loop's index ("EpollSharp loop 0", ... by default).
    /// </summary>
    /// <param name="loopCount">How many loops; 0 for <see cref="Environment.ProcessorCount"/>.</param>
    /// <param name="options">Options for every loop (its backend, thread name, exception handler...); <see langword="null"/> for the defaults.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="loopCount"/> is negative.</exception>
    /// <exception cref="PlatformNotSupportedException">The requested backend is not available.</exception>
    public EventLoopGroup(int loopCount = 0, EventLoopOptions? options = null)
    {
        if (loopCount < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(loopCount), loopCount, "The loop count must be 0 (one per processor) or positive.");
        }

        if (loopCount == 0)
        {
            loopCount = Environment.ProcessorCount;
        }

        string threadName = (options ?? new EventLoopOptions()).ThreadName;
        _loops = new EventLoop[loopCount];
        var runs = new Task[loopCount];
        try
        {
            for (int i = 0; i < loopCount; i++)
            {
                // A loop that ends on its own (an unhandled exception, or a Stop) is disposed at once, on its own thread, so
                // that its listener and connections are closed rather than left open with nothing serving them.
                _loops[i] = new EventLoop(options) { DisposeWhenRunEnds = true };
                runs[i] = _loops[i].Start(threadName + " " + i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }
        catch
        {
            foreach (EventLoop? loop in _loops)
            {
                loop?.Dispose();
            }

            throw;
        }

        Completion = Task.WhenAll(runs);
    }

    /// <summary>The loops.</summary>
    public IReadOnlyList<EventLoop> Loops => _loops;

    /// <summary>The backend the loops use.</summary>
    public EventLoopBackend Backend => _loops[0].Backend;

    /// <summary>Completes when every loop has stopped; faulted if a loop stopped on an unhandled exception.</summary>
    public Task Completion { get; }

    /// <summary>The listeners created by <see cref="Listen(EndPoint, ConnectionHandler, ListenerOptions?, GroupAcceptMode)"/> and <see cref="ListenOnSocket"/>.</summary>
    public IReadOnlyList<ConnectionListener> Listeners
    {
        get
        {
            lock (_listeners)
            {
                return _listeners.ToArray();
            }
        }
    }

    /// <summary>How many connections are open across the group's listeners.</summary>
    public int ConnectionCount
    {
        get
        {
            int count = 0;
            foreach (ConnectionListener listener in Listeners)
            {
                count += listener.ConnectionCount;
            }

            return count;
        }
    }

    /// <summary>How many connections the group's listeners have accepted.</summary>
    public long AcceptedCount
    {
        get
        {
            long count = 0;
            foreach (ConnectionListener listener in Listeners)
            {
                count += listener.AcceptedCount;
            }

            return count;
        }
    }

    /// <summary>The next loop in turn, for work of your own you want spread over the loops.</summary>
    /// <returns>A loop.</returns>
    public EventLoop Next() => _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];

    /// <summary>
    /// Listens on <paramref name="endPoint"/> and serves the connections on all the loops. The connection limit
    /// (<see cref="ListenerOptions.MaxConnections"/>, derived from the descriptor limit when 0) applies to the group as a whole.
    /// </summary>
    /// <param name="endPoint">Where to listen; port 0 picks a free port (the same one for every loop).</param>
    /// <param name="handler">What to do with the connections; called on several loop threads at once.</param>
    /// <param name="options">Options; <see langword="null"/> for the defaults. Copied.</param>
    /// <param name="mode">How connections are spread over the loops.</param>
    /// <returns>The listeners: one per loop in <see cref="GroupAcceptMode.ReusePort"/> mode, else one.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="endPoint"/> or <paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mode"/> is not a defined value.</exception>
    /// <exception cref="ArgumentException"><see cref="GroupAcceptMode.ReusePort"/> or <see cref="ListenerOptions.ReusePort"/> was asked for on an endpoint that is not an IP endpoint.</exception>
    /// <exception cref="PlatformNotSupportedException"><see cref="GroupAcceptMode.ReusePort"/> was asked for on a system other than Linux.</exception>
    /// <exception cref="System.Net.Sockets.SocketException">Binding or listening failed: <see cref="System.Net.Sockets.SocketError.AddressAlreadyInUse"/>
    /// when another socket listens on the address, whatever the mode (unless <see cref="ListenerOptions.ReusePort"/> asked to share it).</exception>
    /// <exception cref="ObjectDisposedException">The group was disposed.</exception>
    public IReadOnlyList<ConnectionListener> Listen(EndPoint endPoint, ConnectionHandler handler, ListenerOptions? options = null, GroupAcceptMode mode = GroupAcceptMode.Auto)
    {
        if (endPoint is null)
        {
            throw new ArgumentNullException(nameof(endPoint));
        }

        if (handler is null)
        {
            throw new ArgumentNullException(nameof(handler));
        }

        if (Volatile.Read(ref _disposed) != 0)
        {
            throw new ObjectDisposedException(nameof(EventLoopGroup));
        }

        mode = mode switch
        {
            GroupAcceptMode.Auto => _loops.Length > 1 && Native.Platform.IsLinux && endPoint is IPEndPoint ? GroupAcceptMode.ReusePort : GroupAcceptMode.SingleAcceptor,
            GroupAcceptMode.ReusePort or GroupAcceptMode.SingleAcceptor => mode,
            _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown GroupAcceptMode value."),
        };

        ListenerOptions copy = options?.Clone() ?? new ListenerOptions();
        var budget = new ConnectionBudget(copy.MaxConnections != 0 ? copy.MaxConnections : DescriptorLimits.DefaultMaxConnections());
        var created = new List<ConnectionListener>();
        try
        {
            if (mode == GroupAcceptMode.SingleAcceptor)
            {
                created.Add(ConnectionListener.Create(_loops[0], _loops, endPoint, handler, copy, budget, copy.ReusePort ? PortSharing.Join : PortSharing.None));
            }
            else
            {
                // The first socket binds without SO_REUSEPORT, so that an address someone already listens on fails with
                // address-in-use; the others join it. Only ListenerOptions.ReusePort (the user's explicit choice) lets the
                // group join sockets of other processes.
                EndPoint bindTo = endPoint;
                for (int i = 0; i < _loops.Length; i++)
                {
                    PortSharing sharing = i == 0 && !copy.ReusePort ? PortSharing.Lead : PortSharing.Join;
                    ConnectionListener listener = ConnectionListener.Create(_loops[i], new[] { _loops[i] }, bindTo, handler, copy, budget, sharing);
                    created.Add(listener);
                    if (i == 0 && bindTo is IPEndPoint { Port: 0 } && listener.LocalEndPoint is IPEndPoint bound)
                    {
                        // Port 0: the kernel chose a port for the first socket; the others join it.
                        bindTo = new IPEndPoint(bound.Address, bound.Port);
                    }
                }
            }
        }
        catch
        {
            foreach (ConnectionListener listener in created)
            {
                listener.Dispose();
            }

            throw;
        }

        lock (_listeners)
        {
            _listeners.AddRange(created);
        }

        return created.ToArray();
    }

    /// <summary>
    /// Starts accepting on <paramref name="socket"/>, a stream socket the caller opened and bound (or inherited, see
    /// <see cref="SocketActivation.TakeSockets"/>), with one acceptor on the first loop that spreads the connections
    /// round-robin over all the loops (<see cref="GroupAcceptMode.SingleAcceptor"/>: one socket cannot be spread with
    /// <c>SO_REUSEPORT</c>). The listener takes the socket over as <see cref="ConnectionListener.ListenOnSocket"/>
    /// describes. The connection limit applies to the group as a whole.
    /// </summary>
    /// <param name="socket">A bound stream socket, listening or not; the listener owns it, and closes it when the call throws.</param>
    /// <param name="handler">What to do with the connections; called on several loop threads at once.</param>
    /// <param name="options">Options; <see langword="null"/> for the defaults. Copied.</param>
    /// <returns>The listener.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="socket"/> or <paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException">As for <see cref="ConnectionListener.ListenOnSocket"/>.</exception>
    /// <exception cref="ObjectDisposedException">The group or the socket was disposed.</exception>
    /// <exception cref="System.Net.Sockets.SocketException"><c>listen</c> failed.</exception>
    public ConnectionListener ListenOnSocket(System.Net.Sockets.Socket socket, ConnectionHandler handler, ListenerOptions? options = null)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            socket?.Dispose();
            throw new ObjectDisposedException(nameof(EventLoopGroup));
        }

        ListenerOptions copy = options?.Clone() ?? new ListenerOptions();
        var budget = new ConnectionBudget(copy.MaxConnections != 0 ? copy.MaxConnections : DescriptorLimits.DefaultMaxConnections());
        ConnectionListener listener = ConnectionListener.Adopt(_loops[0], _loops, socket!, handler, copy, budget);
        lock (_listeners)
        {
            _listeners.Add(listener);
        }

        return listener;
    }

    /// <summary>
    /// Shuts the group down gracefully: every listener stops accepting and drains its connections (see
    /// <see cref="ConnectionListener.ShutdownAsync"/>); connections still open after <paramref name="drainTimeout"/> are reset;
    /// then the loops are stopped and disposed.
    /// </summary>
    /// <param name="drainTimeout">How long connections may take to finish; <see cref="Timeout.InfiniteTimeSpan"/> to wait for ever.</param>
    /// <returns>A task that completes when the connections are closed and the loops disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="drainTimeout"/> is not infinite, and negative or above 3,650 days.</exception>
    public Task ShutdownAsync(TimeSpan drainTimeout)
    {
        if (!ConnectionSettings.IsValidTimeout(drainTimeout, allowZero: true))
        {
            throw new ArgumentOutOfRangeException(nameof(drainTimeout), drainTimeout, "The drain timeout must be zero or more and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
        }

        ConnectionListener[] listeners;
        lock (_listeners)
        {
            listeners = _listeners.ToArray();
        }

        var drains = new Task[listeners.Length];
        for (int i = 0; i < listeners.Length; i++)
        {
            drains[i] = listeners[i].ShutdownAsync(drainTimeout);
        }

        return Task.WhenAll(drains).ContinueWith(
            static (_, state) => ((EventLoopGroup)state!).Dispose(),
            this,
            CancellationToken.None,
            TaskContinuationOptions.None,
            TaskScheduler.Default);
    }

    /// <summary>Resets every connection, closes the listeners and stops and disposes the loops. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (ConnectionListener listener in Listeners)
        {
            listener.Dispose();
        }

        foreach (EventLoop loop in _loops)
        {
            loop.Dispose();
        }
    }
}
