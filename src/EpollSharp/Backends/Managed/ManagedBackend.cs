using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net.Sockets;

namespace EpollSharp.Backends;

/// <summary>
/// The fallback backend, built only on managed socket APIs (<see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, int)"/>,
/// <see cref="Socket.Available"/>, a peeking <see cref="Socket.Receive(byte[], int, int, SocketFlags, out SocketError)"/>, a zero-byte
/// <see cref="Socket.Send(byte[], int, int, SocketFlags, out SocketError)"/>, and on Linux <c>Socket.GetRawSocketOption</c>): no P/Invoke,
/// so it runs wherever .NET runs, and it can be forced on Linux. <c>docs/backends-managed.md</c> has the full account and the measurements.
/// This type is the facade: it implements <see cref="IPollBackend"/> and runs the wait loop; each job is its own type in this folder.
/// </summary>
/// <remarks>
/// <para><b>A wait</b> repeats, until it has something to report, is woken, or times out:</para>
/// <list type="number">
/// <item>Apply the registrations changed since the last wait: <see cref="ManagedRegistry.TakeSnapshot"/> copies them, under the
///   registry's gate, into the <see cref="ManagedSnapshot"/>, so the rest runs without it.</item>
/// <item><b>Scan</b> (<see cref="ManagedScan"/>): non-blocking Selects over every armed registration, at most
///   <see cref="ManagedSelectSet.Capacity"/> list entries each (Socket.Select allocates its poll array from 80 on), then classify
///   what each is ready for (<see cref="ManagedReadinessProbe"/>) and apply its trigger mode (<see cref="ManagedTrigger"/>);
///   <see cref="ManagedRegistry.Commit"/> reports what is still valid. Cost: O(registrations) per wait.</item>
/// <item><b>Block</b> (<see cref="ManagedBlock"/>): a Select with the timeout on the wake socket plus every registration whose next
///   change would be reported; groups beyond the first are selected by the <see cref="ManagedWatcherPool"/>'s threads.</item>
/// </list>
/// <para><b>Threads.</b> <see cref="Add"/>, <see cref="Modify"/> and <see cref="Remove"/> change the <see cref="ManagedRegistry"/>
///   under its gate; when the wait is blocked, <see cref="ManagedWakeup"/> signals the wake socket, so it restarts with the change.
///   <see cref="Remove"/> from another thread returns once the waiting thread no longer uses the socket (<see cref="ManagedRemoveBarrier"/>).
///   Every piece of shared state has one owner, which states its locking rule: the registry (its gate), the wake-up
///   (interlocked flags), the remove barrier (interlocked fields and its own monitor), the watcher pool (its park monitor).
///   Everything else (snapshot, scan and its result, probe, arrival counter, block) belongs to the waiting thread.</para>
/// </remarks>
internal sealed class ManagedBackend : IPollBackend
{
    private readonly ManagedRegistry _registry = new();
    private readonly ManagedWakeup _wakeup;
    private readonly ManagedRemoveBarrier _removeBarrier = new();
    private readonly ManagedWatcherPool _watchers;
    private readonly ManagedSnapshot _snapshot = new();
    private readonly ManagedScanResult _scanResult;
    private readonly ManagedScan _scan;
    private readonly ManagedBlock _block;

    /// <summary>A backend that reports up to <paramref name="maxEvents"/> events per wait without growing.</summary>
    /// <exception cref="PlatformNotSupportedException">No loopback TCP connection can be made (the backend wakes itself through one).</exception>
    public ManagedBackend(int maxEvents)
    {
        _wakeup = new ManagedWakeup();
        _watchers = new ManagedWatcherPool(_wakeup);
        var arrivals = new ManagedArrivalCounter();
        _scanResult = new ManagedScanResult(maxEvents);
        _scan = new ManagedScan(_snapshot, arrivals, _scanResult);
        _block = new ManagedBlock(_snapshot, arrivals, _wakeup, _watchers, _registry);
    }

    /// <inheritdoc/>
    public EventLoopBackend Kind => EventLoopBackend.Managed;

    /// <summary>How many watcher threads exist (for tests and measurements).</summary>
    internal int WatcherCount => _watchers.Count;

    /// <inheritdoc/>
    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        ManagedEntry entry = ManagedEntry.Create(target, token);
        try
        {
            _registry.Add(entry, interest, mode);
        }
        catch
        {
            entry.OwnedSocket?.Dispose();
            throw;
        }

        _wakeup.AfterChange();
    }

    /// <inheritdoc/>
    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        _registry.Modify(target.Handle.DangerousGetHandle(), token, interest, mode);
        _wakeup.AfterChange();
    }

    /// <summary>
    /// Stops watching. From a thread other than the waiting one this returns only once the waiting thread no longer uses
    /// the socket (at most one scan, or a wake-up, later): .NET's <see cref="Socket.Dispose()"/> resets the connection
    /// instead of closing it gracefully when another thread holds a reference on the socket at that moment, and a
    /// socket is typically disposed right after its registration.
    /// </summary>
    public void Remove(BackendTarget target)
    {
        if (!_registry.Remove(target.Handle, out long removedAt))
        {
            return;
        }

        // Wake a blocked wait even though nothing is to be reported: it must move to a snapshot without this socket.
        _wakeup.AfterChange();
        _removeBarrier.WaitUntilUnused(removedAt);
    }

    /// <inheritdoc/>
    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        _removeBarrier.Enter();
        try
        {
            return WaitCore(events, timeoutMilliseconds);
        }
        finally
        {
            _removeBarrier.Leave();
        }
    }

    /// <inheritdoc/>
    public void Wake() => _wakeup.Wake();

    /// <inheritdoc/>
    public void Dispose()
    {
        List<Socket>? owned = _registry.Close();
        if (owned is null)
        {
            return;
        }

        _watchers.Dispose();
        _wakeup.Dispose();
        foreach (Socket socket in owned)
        {
            socket.Dispose();
        }

        _registry.DisposeRetired();
        _snapshot.Clear();
    }

    /// <summary>
    /// What is left of <paramref name="timeoutMilliseconds"/> since <paramref name="start"/> (a <see cref="Stopwatch"/>
    /// timestamp), rounded up as every wait is (<see cref="Native.Timeouts"/>); a timeout of 0 or -1 as it is.
    /// </summary>
    internal static int Remaining(int timeoutMilliseconds, long start)
        => timeoutMilliseconds <= 0 ? timeoutMilliseconds : Native.Timeouts.Remaining(start, timeoutMilliseconds);

    private int WaitCore(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        while (true)
        {
            if (_registry.IsDirty)
            {
                Refresh();
            }

            _scan.Run(events.Length);
            int n = _registry.Commit(_scanResult, events);
            if (n > 0)
            {
                return n;
            }

            if (_wakeup.TakeRequest())
            {
                return 0;
            }

            int remaining = Remaining(timeoutMilliseconds, start);
            if (remaining == 0)
            {
                return 0;
            }

            // Announce the block, then look once more: a change or wake made before this point is seen here; one made
            // after it sees the announcement and signals the wake socket (full fences on both sides: one must see the other).
            _wakeup.AnnounceBlock();
            try
            {
                if (_registry.IsDirty || _wakeup.IsRequested)
                {
                    continue;
                }

                _block.Run(remaining);
            }
            finally
            {
                _wakeup.EndBlock();
            }
        }
    }

    /// <summary>Moves the wait to a new snapshot of the registry, then disposes the sockets no snapshot holds any more.</summary>
    private void Refresh()
    {
        long epoch = _registry.TakeSnapshot(_snapshot);

        // The previous snapshot's sockets are no longer in any Select: let removers of them go.
        _removeBarrier.Use(epoch);
        _registry.DisposeRetired();
        _scan.SnapshotTaken();
    }
}
