using System;
using System.Threading;
using EpollSharp.Connections;

namespace EpollSharp.AspNetCore;

/// <summary>
/// Settings of the EpollSharp transport for Kestrel (<see cref="EpollSharpWebHostBuilderExtensions.UseEpollSharp"/>): how
/// many event loops serve the connections and on which backend, how connections are spread over them, and the
/// backpressure thresholds of each connection's pipes. Kestrel's own settings (<c>KestrelServerOptions.Limits</c>,
/// timeouts, HTTPS, protocols) are set on Kestrel as usual.
/// </summary>
/// <remarks>
/// Each setter checks its value and throws <see cref="ArgumentOutOfRangeException"/> naming the property; what depends on
/// two properties (a resume threshold above its pause threshold) is checked by <see cref="Validate"/>, which the transport
/// calls when Kestrel creates it.
/// </remarks>
public sealed class EpollSharpTransportOptions
{
    private int _loopCount;
    private EventLoopBackend _backend = EventLoopBackend.Auto;
    private GroupAcceptMode _acceptMode = GroupAcceptMode.Auto;
    private int _backlog = 512;
    private long _inputPauseThreshold = 1024 * 1024;
    private long _inputResumeThreshold = 512 * 1024;
    private long _outputPauseThreshold = 64 * 1024;
    private long _outputResumeThreshold = 32 * 1024;
    private TimeSpan _closeTimeout = TimeSpan.FromSeconds(15);
    private int _maxEventsPerWait = 16;

    /// <summary>
    /// How many event loops (one thread each) accept and serve the connections; 0 (the default) for one per processor
    /// (<see cref="Environment.ProcessorCount"/>). The loops are shared by every endpoint Kestrel binds, started at the
    /// first bind and stopped when the application's services are disposed.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative or above 1,024.</exception>
    public int LoopCount
    {
        get => _loopCount;
        set => _loopCount = value is >= 0 and <= 1024 ? value : throw new ArgumentOutOfRangeException(nameof(LoopCount), value, "LoopCount must be 0 (one loop per processor) or 1 to 1,024.");
    }

    /// <summary>
    /// The backend of the loops: <see cref="EventLoopBackend.Auto"/> (the default: epoll on Linux, kqueue on BSD and macOS,
    /// else the managed one), or one named; with <see cref="EventLoopBackend.IoUring"/> the connections and listeners use
    /// io_uring's completions, and where io_uring cannot be set up the first bind throws
    /// <see cref="PlatformNotSupportedException"/> with the reason.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined <see cref="EventLoopBackend"/>.</exception>
    public EventLoopBackend Backend
    {
        get => _backend;
        set => _backend = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(Backend), value, "Backend must be a defined EventLoopBackend value.");
    }

    /// <summary>
    /// How new connections are spread over the loops (<see cref="GroupAcceptMode"/>): <see cref="GroupAcceptMode.Auto"/>
    /// (the default) gives every loop its own listening socket with <c>SO_REUSEPORT</c> on Linux for IP endpoints when
    /// there is more than one loop, and one accepting socket that hands connections round-robin to the loops otherwise
    /// (Unix domain sockets always).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined <see cref="GroupAcceptMode"/>.</exception>
    public GroupAcceptMode AcceptMode
    {
        get => _acceptMode;
        set => _acceptMode = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(AcceptMode), value, "AcceptMode must be a defined GroupAcceptMode value.");
    }

    /// <summary>The listen queue length of each listening socket. Default 512 (as Kestrel's socket transport).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int Backlog
    {
        get => _backlog;
        set => _backlog = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(Backlog), value, "Backlog must be positive.");
    }

    /// <summary>Whether to disable Nagle's algorithm (<c>TCP_NODELAY</c>) on TCP connections. Default <see langword="true"/> (as Kestrel's socket transport).</summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>
    /// When a connection has this many received bytes that Kestrel has not read yet, the loop stops reading its socket
    /// (TCP then slows the client). Default 1 MiB (Kestrel's socket transport's <c>MaxReadBufferSize</c>); 0 for no limit.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long InputPauseThreshold
    {
        get => _inputPauseThreshold;
        set => _inputPauseThreshold = NotNegative(value, nameof(InputPauseThreshold));
    }

    /// <summary>Reading resumes once the unread input is below this. Default 512 KiB; at most <see cref="InputPauseThreshold"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long InputResumeThreshold
    {
        get => _inputResumeThreshold;
        set => _inputResumeThreshold = NotNegative(value, nameof(InputResumeThreshold));
    }

    /// <summary>
    /// When this many bytes Kestrel flushed are not yet handed to the socket, Kestrel's flush waits (a slow client slows
    /// the response instead of growing the server's memory). Default 64 KiB (Kestrel's <c>MaxWriteBufferSize</c>); 0 for no limit.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long OutputPauseThreshold
    {
        get => _outputPauseThreshold;
        set => _outputPauseThreshold = NotNegative(value, nameof(OutputPauseThreshold));
    }

    /// <summary>A waiting flush completes once the unsent output is below this. Default 32 KiB; at most <see cref="OutputPauseThreshold"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long OutputResumeThreshold
    {
        get => _outputResumeThreshold;
        set => _outputResumeThreshold = NotNegative(value, nameof(OutputResumeThreshold));
    }

    /// <summary>
    /// How long a connection that Kestrel finished with may take to close gracefully: its last bytes are sent, then FIN,
    /// then the transport waits for the client's FIN; a connection still open then is reset, which drops what the kernel
    /// had not delivered yet (so this is also the time a slow client has to take the end of the last response). Kestrel
    /// counts the connection, and a graceful shutdown waits for it, until it has closed. Default 15 seconds;
    /// <see cref="Timeout.InfiniteTimeSpan"/> to wait for ever.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not infinite, and not positive or above 3,650 days.</exception>
    public TimeSpan CloseTimeout
    {
        get => _closeTimeout;
        set => _closeTimeout = value == Timeout.InfiniteTimeSpan || (value > TimeSpan.Zero && value <= TimeSpan.FromDays(3650))
            ? value
            : throw new ArgumentOutOfRangeException(nameof(CloseTimeout), value, "CloseTimeout must be positive and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
    }

    /// <summary>
    /// Run Kestrel's connection processing on the connection's loop thread instead of the thread pool (the equivalent of
    /// the socket transport's <c>UnsafePreferInlineScheduling</c>): no hop to the thread pool and back per request, but
    /// the application's code runs on the loop too (its continuations resume there), so it must never block — no
    /// <c>Task.Wait</c>/<c>.Result</c>, no synchronous I/O, no long computation — because while it blocks every other
    /// connection of that loop waits. Default <see langword="false"/>: Kestrel's processing runs on the thread pool, as
    /// with the socket transport, and a blocked request holds up only a pool thread.
    /// </summary>
    public bool RunContinuationsOnLoop { get; set; }

    /// <summary>
    /// The most sockets one pass of a loop serves before it sends what their requests produced: the readiness events one
    /// wait returns (<see cref="EventLoopOptions.MaxEventsPerWait"/>). With <see cref="RunContinuationsOnLoop"/> a loop
    /// reads the requests of one pass, runs Kestrel on each, and sends the responses during the next pass; a
    /// small pass gets the first responses out early, so that clients send their next requests while the loop works on
    /// the rest (with 256 busy connections a pass of 256 left the client idle while the loop worked, and the loop idle
    /// while the client answered). Default 16 (a pass of 256 costs one <c>epoll_wait</c> per 256 requests, one of 16 one
    /// per 16: either is small beside the request's own system calls); 1 to 65,536.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 65,536.</exception>
    public int MaxEventsPerWait
    {
        get => _maxEventsPerWait;
        set => _maxEventsPerWait = value is >= 1 and <= 65536 ? value : throw new ArgumentOutOfRangeException(nameof(MaxEventsPerWait), value, "MaxEventsPerWait must be between 1 and 65,536.");
    }

    /// <summary>Checks what depends on two settings: each resume threshold must not be above its pause threshold (when that one is not 0).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A resume threshold is above its pause threshold.</exception>
    public void Validate()
    {
        if (InputPauseThreshold > 0 && InputResumeThreshold > InputPauseThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(InputResumeThreshold), InputResumeThreshold, $"InputResumeThreshold must not be above InputPauseThreshold ({InputPauseThreshold}).");
        }

        if (OutputPauseThreshold > 0 && OutputResumeThreshold > OutputPauseThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(OutputResumeThreshold), OutputResumeThreshold, $"OutputResumeThreshold must not be above OutputPauseThreshold ({OutputPauseThreshold}).");
        }
    }

    internal PipeConnectionOptions ToPipeOptions() => new()
    {
        InputPauseThreshold = InputPauseThreshold,
        InputResumeThreshold = InputResumeThreshold,
        OutputPauseThreshold = OutputPauseThreshold,
        OutputResumeThreshold = OutputResumeThreshold,
        RunContinuationsOnLoop = RunContinuationsOnLoop,
    };

    internal ListenerOptions ToListenerOptions()
    {
        var options = new ListenerOptions { Backlog = Backlog };

        // Kestrel keeps its own keep-alive and request timeouts: the transport closes no connection for being idle.
        options.Connection.IdleTimeout = Timeout.InfiniteTimeSpan;
        options.Connection.CloseTimeout = CloseTimeout;
        options.Connection.NoDelay = NoDelay;
        return options;
    }

    private static long NotNegative(long value, string name) =>
        value >= 0 ? value : throw new ArgumentOutOfRangeException(name, value, $"{name} must be 0 or more.");
}
