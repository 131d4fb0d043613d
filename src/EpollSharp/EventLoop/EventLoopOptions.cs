using System;

namespace EpollSharp;

/// <summary>Options for a new <see cref="EventLoop"/>.</summary>
public sealed class EventLoopOptions
{
    private int _maxEventsPerWait = 256;
    private TimeSpan _callbackBudget = System.Threading.Timeout.InfiniteTimeSpan;

    /// <summary>The readiness mechanism. <see cref="EventLoopBackend.Auto"/> (the default) picks the best one for the platform.</summary>
    public EventLoopBackend Backend { get; set; } = EventLoopBackend.Auto;

    /// <summary>
    /// Whether an io_uring loop's connections use completions (multishot receive, submitted sends) rather than readiness;
    /// null for the process default: on when the kernel has the capped multishot receive (Linux 6.16 and later), unless
    /// <c>EPOLLSHARP_IO_URING_COMPLETIONS</c> says otherwise (<c>1</c> forces it, <c>0</c> turns it off). Internal: for the
    /// tests and the benchmarks' A/B runs.
    /// </summary>
    internal bool? IoUringCompletions { get; set; }

    /// <summary>
    /// The most readiness events one wait returns (the size of the event buffer, allocated once).
    /// When a wait fills it, the loop waits again without sleeping. Default 256; 1 to 65,536.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 65,536.</exception>
    public int MaxEventsPerWait
    {
        get => _maxEventsPerWait;
        set
        {
            if (value < 1 || value > 65536)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "MaxEventsPerWait must be between 1 and 65,536.");
            }

            _maxEventsPerWait = value;
        }
    }

    /// <summary>
    /// The budget for one callback (readiness, timer or posted work): one that runs longer is reported through
    /// <see cref="EventLoop.SlowCallback"/> while it still runs (a watchdog thread looks a few times per budget) and again
    /// when it returns. A callback that runs long holds every other connection of the loop waiting. Default
    /// <see cref="System.Threading.Timeout.InfiniteTimeSpan"/>: off, with no watchdog thread and nothing measured. When on,
    /// each callback costs two clock reads. For example 50 ms.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not <see cref="System.Threading.Timeout.InfiniteTimeSpan"/>, and below 1 ms or above 1 hour.</exception>
    public TimeSpan CallbackBudget
    {
        get => _callbackBudget;
        set => _callbackBudget = value == System.Threading.Timeout.InfiniteTimeSpan || (value >= TimeSpan.FromMilliseconds(1) && value <= TimeSpan.FromHours(1))
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "CallbackBudget must be from 1 ms to 1 hour, or Timeout.InfiniteTimeSpan (off).");
    }

    /// <summary>The name of the thread that <see cref="EventLoop.Start(string?)"/> creates when it is given none. Default "EpollSharp loop".</summary>
    public string ThreadName { get; set; } = "EpollSharp loop";

    /// <summary>
    /// Called on the loop thread with any exception that a callback (readiness, timer or posted work)
    /// throws. The loop goes on with the next callback. When this is <see langword="null"/> (the
    /// default), or when the handler itself throws, the loop finishes its current iteration, stops,
    /// and <see cref="EventLoop.Run"/> rethrows the exception: an exception is never swallowed.
    /// </summary>
    public Action<Exception>? UnhandledExceptionHandler { get; set; }

    /// <summary>
    /// Where the loop, and the listeners and connections on it, log what an operator needs (see docs/articles/operating.md
    /// for the events): categories <c>EpollSharp.EventLoop</c> and <c>EpollSharp.Connections</c>. <see langword="null"/> (the
    /// default) logs nothing. A message whose level is off costs one check and allocates nothing.
    /// </summary>
    public Microsoft.Extensions.Logging.ILoggerFactory? LoggerFactory { get; set; }
}
