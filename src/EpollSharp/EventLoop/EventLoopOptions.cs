using System;

namespace EpollSharp;

/// <summary>Options for a new <see cref="EventLoop"/>.</summary>
public sealed class EventLoopOptions
{
    private int _maxEventsPerWait = 256;

    /// <summary>The readiness mechanism. <see cref="EventLoopBackend.Auto"/> (the default) picks the best one for the platform.</summary>
    public EventLoopBackend Backend { get; set; } = EventLoopBackend.Auto;

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

    /// <summary>The name of the thread that <see cref="EventLoop.Start(string?)"/> creates when it is given none. Default "EpollSharp loop".</summary>
    public string ThreadName { get; set; } = "EpollSharp loop";

    /// <summary>
    /// Called on the loop thread with any exception that a callback (readiness, timer or posted work)
    /// throws. The loop goes on with the next callback. When this is <see langword="null"/> (the
    /// default), or when the handler itself throws, the loop finishes its current iteration, stops,
    /// and <see cref="EventLoop.Run"/> rethrows the exception: an exception is never swallowed.
    /// </summary>
    public Action<Exception>? UnhandledExceptionHandler { get; set; }
}
