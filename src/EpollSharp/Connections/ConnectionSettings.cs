using System;
using System.Diagnostics;
using System.Threading;
using EpollSharp.Native;

namespace EpollSharp.Connections;

/// <summary>The connection options of one listener, validated and converted once; shared by its connections (one reference each).</summary>
internal sealed class ConnectionSettings
{
    public ConnectionSettings(ConnectionOptions options)
    {
        options.Validate();
        ReceiveBufferSize = options.ReceiveBufferSize;
        MaxReadsPerEvent = options.MaxReadsPerEvent;
        HighWatermark = options.HighWatermark;
        LowWatermark = options.LowWatermark;
        MaxBufferedBytes = options.MaxBufferedBytes;
        IdleTimeout = options.IdleTimeout;
        IdleTicks = options.IdleTimeout == Timeout.InfiniteTimeSpan ? 0 : ToStopwatchTicks(options.IdleTimeout);
        CloseTimeout = options.CloseTimeout;
        NoDelay = options.NoDelay;
        TriggerMode = options.TriggerMode;
        KeepAlive = options.KeepAlive;
        KeepAliveTimeSeconds = Seconds(options.KeepAliveTime);
        KeepAliveIntervalSeconds = Seconds(options.KeepAliveInterval);
        KeepAliveRetryCount = options.KeepAliveRetryCount ?? 0;
        SocketSendBufferSize = options.SocketSendBufferSize ?? 0;
        SocketReceiveBufferSize = options.SocketReceiveBufferSize ?? 0;
        LingerSeconds = Seconds(options.Linger);
    }

    public int ReceiveBufferSize { get; }

    /// <summary>The connection layer's logger (category <c>EpollSharp.Connections</c>) of the loop that owns the listener or dial.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>
    /// The longest finite timeout or delay the connection layer takes: 3,650 days. Each is scheduled as a loop timer, and a
    /// longer one (TimeSpan.MaxValue, say) could not be; it is refused where it is given rather than failing each connection.
    /// </summary>
    internal static TimeSpan MaxTimeout => TimeSpan.FromDays(3650);

    /// <summary>Whether <paramref name="value"/> is zero (when allowed) or positive, and at most <see cref="MaxTimeout"/>, or infinite.</summary>
    internal static bool IsValidTimeout(TimeSpan value, bool allowZero) =>
        value == Timeout.InfiniteTimeSpan || ((allowZero ? value >= TimeSpan.Zero : value > TimeSpan.Zero) && value <= MaxTimeout);

    public int MaxReadsPerEvent { get; }

    public long HighWatermark { get; }

    public long LowWatermark { get; }

    public long MaxBufferedBytes { get; }

    public TimeSpan IdleTimeout { get; }

    /// <summary>The idle timeout in <see cref="Stopwatch"/> ticks; 0 when disabled.</summary>
    public long IdleTicks { get; }

    public TimeSpan CloseTimeout { get; }

    public bool NoDelay { get; }

    public TriggerMode TriggerMode { get; }

    public bool KeepAlive { get; }

    /// <summary><c>TCP_KEEPIDLE</c> in seconds; 0 keeps the system's.</summary>
    public int KeepAliveTimeSeconds { get; }

    /// <summary><c>TCP_KEEPINTVL</c> in seconds; 0 keeps the system's.</summary>
    public int KeepAliveIntervalSeconds { get; }

    /// <summary><c>TCP_KEEPCNT</c>; 0 keeps the system's.</summary>
    public int KeepAliveRetryCount { get; }

    /// <summary><c>SO_SNDBUF</c> in bytes; 0 keeps the system's.</summary>
    public int SocketSendBufferSize { get; }

    /// <summary><c>SO_RCVBUF</c> in bytes; 0 keeps the system's.</summary>
    public int SocketReceiveBufferSize { get; }

    /// <summary>The <c>SO_LINGER</c> time in seconds; 0 keeps the system's close (no linger).</summary>
    public int LingerSeconds { get; }

    /// <summary>A validated whole number of seconds (<see cref="ConnectionOptions"/> checks it), or 0 for null.</summary>
    private static int Seconds(TimeSpan? value) => value is TimeSpan span ? (int)(span.Ticks / TimeSpan.TicksPerSecond) : 0;

    /// <summary>A non-negative timeout as a <see cref="Stopwatch"/> tick count, rounded up: <see cref="Timeouts.ToStopwatchTicks"/>.</summary>
    internal static long ToStopwatchTicks(TimeSpan span) => Timeouts.ToStopwatchTicks(span);

    /// <summary>A non-negative <see cref="Stopwatch"/> tick count as a delay, rounded up: <see cref="Timeouts.FromStopwatchTicks"/>.</summary>
    internal static TimeSpan FromStopwatchTicks(long ticks) => Timeouts.FromStopwatchTicks(ticks);
}
