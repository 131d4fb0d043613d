using System;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// The connection layer's counts for one loop, read by the <c>EpollSharp</c> meter's connection instruments
/// (<see cref="ConnectionMetrics"/>). Written on the loop thread (the byte counts with plain writes, the rarer events with
/// <see cref="Interlocked"/>, as a connection of a dead loop may close on another thread).
/// </summary>
internal sealed class LoopConnectionStats
{
    private static readonly ConditionalWeakTable<EventLoop, LoopConnectionStats> s_byLoop = new();
    private static readonly Action<object?> s_onLoopReleased = static state => ConnectionMetrics.Remove((LoopConnectionStats)state!);
    private static readonly object s_lock = new();

    private long _opened;
    private long _bytesReceived;
    private long _bytesSent;
    private long _writePauses;
    private long _borrowedWrites;
    private long _partialBorrowedSends;

    private LoopConnectionStats(EventLoop loop) => Loop = loop;

    internal EventLoop Loop { get; }

    /// <summary>Closed connections by <see cref="ConnectionCloseReason"/> (its value is the index).</summary>
    internal long[] Closed { get; } = new long[ConnectionMetrics.CloseReasonCount];

    /// <summary>Accept pauses by <see cref="AcceptPauseReason"/> (its value is the index).</summary>
    internal long[] AcceptPauses { get; } = new long[ConnectionMetrics.PauseReasonCount];

    internal long Opened => Volatile.Read(ref _opened);

    internal long BytesReceived => Volatile.Read(ref _bytesReceived);

    internal long BytesSent => Volatile.Read(ref _bytesSent);

    internal long WritePauses => Volatile.Read(ref _writePauses);

    /// <summary>Writes sent from the provided receive buffer they were handed in, with no copy (completion path; for tests).</summary>
    internal long BorrowedWrites => Volatile.Read(ref _borrowedWrites);

    /// <summary>Sends that took only part of such borrowed bytes, whose rest was then copied (completion path; for tests).</summary>
    internal long PartialBorrowedSends => Volatile.Read(ref _partialBorrowedSends);

    internal long Active
    {
        get
        {
            long closed = 0;
            for (int i = 0; i < Closed.Length; i++)
            {
                closed += Volatile.Read(ref Closed[i]);
            }

            return Opened - closed;
        }
    }

    /// <summary>The counts of <paramref name="loop"/>, made on first use and observed until the loop is released.</summary>
    internal static LoopConnectionStats For(EventLoop loop)
    {
        if (s_byLoop.TryGetValue(loop, out LoopConnectionStats? stats))
        {
            return stats;
        }

        lock (s_lock)
        {
            if (!s_byLoop.TryGetValue(loop, out stats))
            {
                stats = new LoopConnectionStats(loop);
                s_byLoop.Add(loop, stats);
                try
                {
                    loop.AddReleaseHook(s_onLoopReleased, stats);
                    ConnectionMetrics.Add(stats);
                }
                catch (ObjectDisposedException)
                {
                    // A loop released already: its counts are kept but no longer observed.
                }
            }

            return stats;
        }
    }

    internal void OnOpened() => Interlocked.Increment(ref _opened);

    internal void OnClosed(ConnectionCloseReason reason) => Interlocked.Increment(ref Closed[(int)reason]);

    internal void OnAcceptPaused(AcceptPauseReason reason) => Interlocked.Increment(ref AcceptPauses[(int)reason]);

    internal void OnWritePaused() => Interlocked.Increment(ref _writePauses);

    /// <summary>Loop thread only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OnBorrowedWrite() => Volatile.Write(ref _borrowedWrites, _borrowedWrites + 1);

    /// <summary>Loop thread only.</summary>
    internal void OnPartialBorrowedSend() => Volatile.Write(ref _partialBorrowedSends, _partialBorrowedSends + 1);

    /// <summary>Loop thread only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddReceived(int bytes) => Volatile.Write(ref _bytesReceived, _bytesReceived + bytes);

    /// <summary>Loop thread only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddSent(long bytes) => Volatile.Write(ref _bytesSent, _bytesSent + bytes);
}

/// <summary>The connection layer's instruments on the <c>EpollSharp</c> meter, tagged with the loop's id and backend.</summary>
internal static class ConnectionMetrics
{
    internal const int CloseReasonCount = (int)ConnectionCloseReason.LoopDisposed + 1;
    internal const int PauseReasonCount = (int)AcceptPauseReason.Error + 1;

    private static readonly Native.CopyOnWriteList<LoopConnectionStats> s_stats = new();

    private static readonly KeyValuePair<string, object?>[] s_closeReasonTags = Tags("epollsharp.connection.close_reason", CloseReasonCount, i => Snake(((ConnectionCloseReason)i).ToString()));
    private static readonly KeyValuePair<string, object?>[] s_pauseReasonTags = Tags("epollsharp.accept_pause.reason", PauseReasonCount, i => Snake(((AcceptPauseReason)i).ToString()));

    static ConnectionMetrics()
    {
        Meter meter = LoopMetrics.Meter;
        meter.CreateObservableCounter("epollsharp.opened_connections", () => Observe(static s => s.Opened), "{connection}", "Connections started (accepted, or dialed and connected).");
        meter.CreateObservableUpDownCounter("epollsharp.active_connections", () => Observe(static s => s.Active), "{connection}", "Connections open now.");
        meter.CreateObservableCounter("epollsharp.closed_connections", ObserveClosed, "{connection}", "Connections ended, by reason (epollsharp.connection.close_reason).");
        meter.CreateObservableCounter("epollsharp.connection.bytes_received", () => Observe(static s => s.BytesReceived), "By", "Bytes read from connections' sockets.");
        meter.CreateObservableCounter("epollsharp.connection.bytes_sent", () => Observe(static s => s.BytesSent), "By", "Bytes handed to the kernel by connections.");
        meter.CreateObservableCounter("epollsharp.connection.write_pauses", () => Observe(static s => s.WritePauses), "{pause}", "Backpressure episodes: a connection's buffered output reached its high watermark (OnWritePaused).");
        meter.CreateObservableCounter("epollsharp.accept_pauses", ObserveAcceptPauses, "{pause}", "Times a listener paused accepting, by reason (epollsharp.accept_pause.reason).");
    }

    internal static void Add(LoopConnectionStats stats) => s_stats.Add(stats);

    internal static void Remove(LoopConnectionStats stats) => s_stats.Remove(stats);

    private static IEnumerable<Measurement<long>> Observe(Func<LoopConnectionStats, long> read)
    {
        LoopConnectionStats[] all = s_stats.Snapshot;
        var measurements = new Measurement<long>[all.Length];
        for (int i = 0; i < all.Length; i++)
        {
            measurements[i] = new Measurement<long>(read(all[i]), all[i].Loop.LoopIdTag, all[i].Loop.BackendTag);
        }

        return measurements;
    }

    private static IEnumerable<Measurement<long>> ObserveClosed() => ObserveByReason(static s => s.Closed, s_closeReasonTags);

    private static IEnumerable<Measurement<long>> ObserveAcceptPauses() => ObserveByReason(static s => s.AcceptPauses, s_pauseReasonTags);

    /// <summary>One measurement per loop and reason that has happened at least once.</summary>
    private static IEnumerable<Measurement<long>> ObserveByReason(Func<LoopConnectionStats, long[]> counts, KeyValuePair<string, object?>[] tags)
    {
        var measurements = new List<Measurement<long>>();
        foreach (LoopConnectionStats stats in s_stats.Snapshot)
        {
            long[] byReason = counts(stats);
            for (int reason = 1; reason < byReason.Length; reason++)
            {
                long count = Volatile.Read(ref byReason[reason]);
                if (count != 0)
                {
                    measurements.Add(new Measurement<long>(count, stats.Loop.LoopIdTag, stats.Loop.BackendTag, tags[reason]));
                }
            }
        }

        return measurements;
    }

    private static KeyValuePair<string, object?>[] Tags(string name, int count, Func<int, string> value)
    {
        var tags = new KeyValuePair<string, object?>[count];
        for (int i = 0; i < count; i++)
        {
            tags[i] = new KeyValuePair<string, object?>(name, value(i));
        }

        return tags;
    }

    /// <summary><c>BrokenPipe</c> to <c>broken_pipe</c>, as OpenTelemetry's attribute values are written.</summary>
    private static string Snake(string name)
    {
        var text = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c))
            {
                if (i > 0)
                {
                    text.Append('_');
                }

                text.Append(char.ToLowerInvariant(c));
            }
            else
            {
                text.Append(c);
            }
        }

        return text.ToString();
    }
}
