using System;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// Settings for each <see cref="Connection"/> a listener accepts. Every limit has a safe default; the defaults
/// suit a server with many mostly idle connections and small to medium messages.
/// </summary>
/// <remarks>
/// The values are read when a listener is created; changing them afterwards has no effect on it.
/// <see cref="Validate"/> checks that they fit together (<c>LowWatermark &lt;= HighWatermark &lt;= MaxBufferedBytes</c>).
/// </remarks>
public sealed class ConnectionOptions
{
    /// <summary>The kernel's bound on <c>TCP_KEEPIDLE</c> and <c>TCP_KEEPINTVL</c> (Linux's <c>MAX_TCP_KEEPIDLE</c>, <c>MAX_TCP_KEEPINTVL</c>).</summary>
    private const int MaxKeepAliveSeconds = 32767;

    private int _receiveBufferSize = 16 * 1024;
    private int _maxReadsPerEvent = 16;
    private long _highWatermark = 64 * 1024;
    private long _lowWatermark = 16 * 1024;
    private long _maxBufferedBytes = 1024 * 1024;
    private TimeSpan _idleTimeout = TimeSpan.FromMinutes(2);
    private TimeSpan _closeTimeout = TimeSpan.FromSeconds(10);
    private TriggerMode _triggerMode = TriggerMode.Level;
    private TimeSpan? _keepAliveTime;
    private TimeSpan? _keepAliveInterval;
    private int? _keepAliveRetryCount;
    private int? _socketSendBufferSize;
    private int? _socketReceiveBufferSize;
    private TimeSpan? _linger;

    /// <summary>
    /// The size of the buffer each read uses, rented from <see cref="System.Buffers.ArrayPool{T}.Shared"/> when the
    /// socket is readable and returned when the read pass ends, so an idle connection holds no receive buffer.
    /// Default 16 KiB; 256 bytes to 1 MiB.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 256 to 1,048,576.</exception>
    public int ReceiveBufferSize
    {
        get => _receiveBufferSize;
        set => _receiveBufferSize = Check(value, 256, 1024 * 1024, nameof(ReceiveBufferSize));
    }

    /// <summary>
    /// The most reads one readiness event makes before the loop moves on to other connections (fairness: one busy
    /// connection cannot hold the loop). Level-triggered, the loop simply reports the rest next iteration; edge-triggered,
    /// the connection posts itself a continuation. Default 16; 1 to 1,024.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 1,024.</exception>
    public int MaxReadsPerEvent
    {
        get => _maxReadsPerEvent;
        set => _maxReadsPerEvent = Check(value, 1, 1024, nameof(MaxReadsPerEvent));
    }

    /// <summary>
    /// Backpressure starts when the bytes buffered for sending reach this value: <see cref="Connection.IsWritePaused"/>
    /// becomes true and <see cref="ConnectionHandler.OnWritePaused(Connection)"/> is called (by default it pauses receiving).
    /// Default 64 KiB.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public long HighWatermark
    {
        get => _highWatermark;
        set => _highWatermark = Check(value, 1, long.MaxValue, nameof(HighWatermark));
    }

    /// <summary>
    /// Backpressure ends when the buffered bytes drain to this value or below: <see cref="ConnectionHandler.OnWriteResumed(Connection)"/>
    /// is called (by default it resumes receiving). Default 16 KiB.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long LowWatermark
    {
        get => _lowWatermark;
        set => _lowWatermark = Check(value, 0, long.MaxValue, nameof(LowWatermark));
    }

    /// <summary>
    /// The hard limit on bytes buffered for sending, whatever the handler does. A write that would buffer more is
    /// refused (<see cref="Connection.Write(ReadOnlySpan{byte})"/> returns <see langword="false"/>) and the connection is
    /// reset with <see cref="ConnectionCloseReason.OutputLimitExceeded"/>: a stream with a piece missing is corrupt, so it is
    /// not kept open. This is what stops a client that never reads from growing the server's memory. Default 1 MiB.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public long MaxBufferedBytes
    {
        get => _maxBufferedBytes;
        set => _maxBufferedBytes = Check(value, 1, long.MaxValue, nameof(MaxBufferedBytes));
    }

    /// <summary>
    /// A connection on which nothing was received and nothing could be sent for this long is closed with
    /// <see cref="ConnectionCloseReason.IdleTimeout"/> (reset if output is still buffered: the peer stopped reading).
    /// This closes connections that open and go silent (slowloris-style). A client that trickles a byte now and then
    /// keeps its connection: deadlines per request belong to the protocol handler. Default 2 minutes;
    /// <see cref="Timeout.InfiniteTimeSpan"/> disables it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not infinite, and not positive or above 3,650 days.</exception>
    public TimeSpan IdleTimeout
    {
        get => _idleTimeout;
        set => _idleTimeout = CheckTimeout(value, nameof(IdleTimeout));
    }

    /// <summary>
    /// How long a graceful <see cref="Connection.Close()"/> may take (flushing buffered output, then waiting for the peer
    /// to close its side) before the connection is reset with <see cref="ConnectionCloseReason.CloseTimeout"/>. Default 10 seconds.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not infinite, and not positive or above 3,650 days.</exception>
    public TimeSpan CloseTimeout
    {
        get => _closeTimeout;
        set => _closeTimeout = CheckTimeout(value, nameof(CloseTimeout));
    }

    /// <summary>
    /// Whether to disable Nagle's algorithm (<c>TCP_NODELAY</c>) on TCP connections. Default <see langword="true"/>. Not
    /// applied to other sockets (Unix domain sockets have no such option); a failure is reported through
    /// <see cref="ConnectionHandler.OnSocketOptionFailed"/> and the connection carries on.
    /// </summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>
    /// Whether to turn on keep-alive probes (<c>SO_KEEPALIVE</c>): a TCP connection that has been silent for
    /// <see cref="KeepAliveTime"/> is probed, and reset when <see cref="KeepAliveRetryCount"/> probes go unanswered, so a
    /// peer that vanished without a word (power off, cable pulled) does not hold the connection forever. Default
    /// <see langword="false"/> (the system's default, off). Applied to every stream socket; on a Unix domain socket
    /// Linux accepts the option but sends no probes. A failure is reported through
    /// <see cref="ConnectionHandler.OnSocketOptionFailed"/> and the connection carries on.
    /// </summary>
    public bool KeepAlive { get; set; }

    /// <summary>
    /// With <see cref="KeepAlive"/>, how long a TCP connection is silent before the first probe (<c>TCP_KEEPIDLE</c>);
    /// <see langword="null"/> (default) keeps the system's (<c>net.ipv4.tcp_keepalive_time</c>, 2 hours on Linux).
    /// Whole seconds, 1 to 32,767 (the kernel's range). TCP only: not applied to other sockets, nor without <see cref="KeepAlive"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a whole number of seconds from 1 to 32,767.</exception>
    public TimeSpan? KeepAliveTime
    {
        get => _keepAliveTime;
        set => _keepAliveTime = CheckSeconds(value, 1, MaxKeepAliveSeconds, nameof(KeepAliveTime));
    }

    /// <summary>
    /// With <see cref="KeepAlive"/>, the time between unanswered probes on a TCP connection (<c>TCP_KEEPINTVL</c>);
    /// <see langword="null"/> (default) keeps the system's (<c>net.ipv4.tcp_keepalive_intvl</c>, 75 seconds on Linux).
    /// Whole seconds, 1 to 32,767 (the kernel's range). TCP only: not applied to other sockets, nor without <see cref="KeepAlive"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a whole number of seconds from 1 to 32,767.</exception>
    public TimeSpan? KeepAliveInterval
    {
        get => _keepAliveInterval;
        set => _keepAliveInterval = CheckSeconds(value, 1, MaxKeepAliveSeconds, nameof(KeepAliveInterval));
    }

    /// <summary>
    /// With <see cref="KeepAlive"/>, how many unanswered probes reset a TCP connection (<c>TCP_KEEPCNT</c>);
    /// <see langword="null"/> (default) keeps the system's (<c>net.ipv4.tcp_keepalive_probes</c>, 9 on Linux). 1 to 127
    /// (the kernel's range). TCP only: not applied to other sockets, nor without <see cref="KeepAlive"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 127.</exception>
    public int? KeepAliveRetryCount
    {
        get => _keepAliveRetryCount;
        set => _keepAliveRetryCount = value is int count ? Check(count, 1, 127, nameof(KeepAliveRetryCount)) : null;
    }

    /// <summary>
    /// The size asked of the kernel for the socket's send buffer (<c>SO_SNDBUF</c>), in bytes; <see langword="null"/>
    /// (default) keeps the system's (and, for TCP, its automatic tuning, which a set size turns off). Linux doubles the
    /// value (the extra is its bookkeeping), caps it at <c>net.core.wmem_max</c> first, and raises it to a minimum of a few
    /// kilobytes. Not to be confused with the library's own buffers (<see cref="MaxBufferedBytes"/>).
    /// Applied to every stream socket (a Unix domain socket too).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int? SocketSendBufferSize
    {
        get => _socketSendBufferSize;
        set => _socketSendBufferSize = value is int size ? Check(size, 1, int.MaxValue, nameof(SocketSendBufferSize)) : null;
    }

    /// <summary>
    /// The size asked of the kernel for the socket's receive buffer (<c>SO_RCVBUF</c>), in bytes; <see langword="null"/>
    /// (default) keeps the system's (and, for TCP, its automatic tuning, which a set size turns off). Linux doubles the
    /// value, caps it at <c>net.core.rmem_max</c> first, and raises it to a minimum of a few kilobytes. Not the
    /// buffer each read rents (<see cref="ReceiveBufferSize"/>). Applied to every stream socket (a Unix domain socket too,
    /// where Linux bounds what is queued by the sender's send buffer instead).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int? SocketReceiveBufferSize
    {
        get => _socketReceiveBufferSize;
        set => _socketReceiveBufferSize = value is int size ? Check(size, 1, int.MaxValue, nameof(SocketReceiveBufferSize)) : null;
    }

    /// <summary>
    /// Lingering close (<c>SO_LINGER</c> on, with this time): when the socket is closed with data the peer has not yet
    /// acknowledged, the close waits up to this long for it. <see langword="null"/> (default) keeps the system's close,
    /// which returns at once and lets the kernel send the rest in the background. Whole seconds, 1 to 3,600; zero is
    /// refused, since a close that resets is <see cref="Connection.Abort"/> (which sets linger 0 itself).
    /// </summary>
    /// <remarks>
    /// On Linux the wait happens inside <c>close</c>, whether or not the socket is non-blocking, so it holds the loop
    /// thread, and every connection on it, for up to this long. A graceful <see cref="Connection.Close()"/> has flushed
    /// its output and read the peer's end of stream before it closes, so the wait is then short; use the option only
    /// when you need it. Applied to every stream socket; on a Unix domain socket Linux accepts the option but its close
    /// never waits.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a whole number of seconds from 1 to 3,600.</exception>
    public TimeSpan? Linger
    {
        get => _linger;
        set => _linger = CheckSeconds(value, 1, 3600, nameof(Linger));
    }

    /// <summary>
    /// How connections are registered with their loop: <see cref="TriggerMode.Level"/> (default) or <see cref="TriggerMode.Edge"/>.
    /// The connection reads until the kernel has nothing more (or <see cref="MaxReadsPerEvent"/>) either way, so both cost
    /// one receive per small message.
    /// </summary>
    /// <remarks>
    /// On epoll, <see cref="TriggerMode.Edge"/> hands over busy connections in the order their data arrived, while
    /// level-triggered epoll hands them over in the order of the previous wait; which gives the shorter latency tail
    /// depends on the workload (the benchmarks document measures both side by side). Level is the default because every
    /// backend supports it natively: the managed backend emulates edge mode, at a cost per wait.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The value is not Level or Edge (one-shot does not suit a connection).</exception>
    public TriggerMode TriggerMode
    {
        get => _triggerMode;
        set
        {
            if (value is not (TriggerMode.Level or TriggerMode.Edge))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "A connection is registered level- or edge-triggered.");
            }

            _triggerMode = value;
        }
    }

    /// <summary>Checks that the values fit together.</summary>
    /// <exception cref="ArgumentException"><see cref="LowWatermark"/> is above <see cref="HighWatermark"/>, or <see cref="HighWatermark"/> above <see cref="MaxBufferedBytes"/>.</exception>
    public void Validate()
    {
        if (LowWatermark > HighWatermark)
        {
            throw new ArgumentException($"LowWatermark ({LowWatermark}) must not be above HighWatermark ({HighWatermark}).");
        }

        if (HighWatermark > MaxBufferedBytes)
        {
            throw new ArgumentException($"HighWatermark ({HighWatermark}) must not be above MaxBufferedBytes ({MaxBufferedBytes}).");
        }
    }

    internal ConnectionOptions Clone() => (ConnectionOptions)MemberwiseClone();

    private static int Check(int value, int min, int max, string name)
    {
        if (value < min || value > max)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be between {min} and {max}.");
        }

        return value;
    }

    private static long Check(long value, long min, long max, string name)
    {
        if (value < min || value > max)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be between {min} and {max}.");
        }

        return value;
    }

    private static TimeSpan? CheckSeconds(TimeSpan? value, int min, int max, string name)
    {
        if (value is TimeSpan span && (span.Ticks % TimeSpan.TicksPerSecond != 0 || span.Ticks < min * TimeSpan.TicksPerSecond || span.Ticks > max * TimeSpan.TicksPerSecond))
        {
            throw new ArgumentOutOfRangeException(name, span, $"{name} must be a whole number of seconds from {min} to {max}, or null for the system's.");
        }

        return value;
    }

    private static TimeSpan CheckTimeout(TimeSpan value, string name)
    {
        if (!ConnectionSettings.IsValidTimeout(value, allowZero: false))
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
        }

        return value;
    }
}
