using System;
using Microsoft.Extensions.Logging;

namespace EpollSharp;

/// <summary>
/// What the loop logs (category <c>EpollSharp.EventLoop</c>), with the high-performance <c>LoggerMessage</c> pattern: a
/// message whose level is off costs one check and allocates nothing. Event ids 1 to 99; docs/articles/operating.md lists them.
/// </summary>
internal static partial class LoopLog
{
    /// <summary>The category of the loop's logs.</summary>
    internal const string Category = "EpollSharp.EventLoop";

    [LoggerMessage(EventId = 1, EventName = "CallbackException", Level = LogLevel.Error,
        Message = "A loop callback threw; {Handling}.")]
    internal static partial void CallbackException(ILogger logger, Exception exception, string handling);

    [LoggerMessage(EventId = 2, EventName = "SlowCallbackRunning", Level = LogLevel.Warning,
        Message = "A loop callback has been running for {ElapsedMs} ms, past its budget of {BudgetMs} ms: {Kind} for {Target} ({Method}). Every other callback of the loop waits.")]
    internal static partial void SlowCallbackRunning(ILogger logger, long elapsedMs, long budgetMs, LoopCallbackKind kind, string target, string method);

    [LoggerMessage(EventId = 3, EventName = "SlowCallbackEnded", Level = LogLevel.Warning,
        Message = "A loop callback ran {ElapsedMs} ms, past its budget of {BudgetMs} ms: {Kind} for {Target} ({Method}).")]
    internal static partial void SlowCallbackEnded(ILogger logger, long elapsedMs, long budgetMs, LoopCallbackKind kind, string target, string method);

    [LoggerMessage(EventId = 4, EventName = "LoopStarted", Level = LogLevel.Debug,
        Message = "Event loop ({Backend}) running on thread {ThreadName}.")]
    internal static partial void LoopStarted(ILogger logger, EventLoopBackend backend, string? threadName);

    [LoggerMessage(EventId = 5, EventName = "LoopStopped", Level = LogLevel.Debug,
        Message = "Event loop ({Backend}) stopped running.")]
    internal static partial void LoopStopped(ILogger logger, EventLoopBackend backend);

    [LoggerMessage(EventId = 6, EventName = "LoopDisposed", Level = LogLevel.Debug,
        Message = "Event loop ({Backend}) released: {Registrations} registrations and {Timers} timers dropped.")]
    internal static partial void LoopDisposed(ILogger logger, EventLoopBackend backend, int registrations, int timers);
}
