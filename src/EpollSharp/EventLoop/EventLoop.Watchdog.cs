using System;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading;

namespace EpollSharp;

// The callback budget: the loop thread marks the start and end of each callback; the watchdog thread (CallbackWatchdog)
// reads the marks and reports a callback that runs past the budget while it still runs; the loop thread reports it again
// when it returns. Off (no marks, no thread) unless EventLoopOptions.CallbackBudget is set.
public sealed partial class EventLoop
{
    /// <summary>The budget in <see cref="Stopwatch"/> ticks; 0 when off.</summary>
    private readonly long _budgetTicks;

    // Written by the loop thread only. The watchdog reads them without a lock: _callbackSequence is written after the
    // target fields and before _callbackSince (both with release semantics), so a reader that sees the same sequence
    // before and after reading the fields has read one callback's fields.
    private object? _callbackTarget;
    private object? _callbackState;
    private LoopCallbackKind _callbackKind;
    private long _callbackSequence;
    private long _callbackSince;

    // The watchdog thread's own: the sequence number of the callback it reported last.
    private long _reportedSequence;

    /// <summary>
    /// Raised for a callback (readiness, timer or posted work) that runs past <see cref="EventLoopOptions.CallbackBudget"/>:
    /// once while it still runs, from the watchdog thread (so that even a callback that never returns is seen), and once
    /// when it returns, on the loop thread, with its duration. Such a callback holds every other connection of the loop
    /// waiting: move the work off the loop (see <c>Connection.Offload</c>). A handler must be quick and must not block; an
    /// exception it throws is handled as a callback's exception on the loop. Never raised while the budget is off.
    /// </summary>
    public event EventHandler<SlowCallbackEventArgs>? SlowCallback;

    /// <summary>The budget for one callback (<see cref="EventLoopOptions.CallbackBudget"/>); <see cref="Timeout.InfiniteTimeSpan"/> when off.</summary>
    public TimeSpan CallbackBudget => _budgetTicks == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromTicks((long)(_budgetTicks * ((double)TimeSpan.TicksPerSecond / Stopwatch.Frequency)));

    internal long BudgetTicks => _budgetTicks;

    private static long ToStopwatchTicks(TimeSpan budget) =>
        budget == Timeout.InfiniteTimeSpan ? 0 : Math.Max(1, (long)(budget.Ticks * ((double)Stopwatch.Frequency / TimeSpan.TicksPerSecond)));

    /// <summary>Marks the start of a callback (loop thread), when a budget is set or the callback-duration histogram is enabled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void BeginCallback(LoopCallbackKind kind, object target, object? state)
    {
        if (_budgetTicks == 0 && !LoopMetrics.CallbackDuration.Enabled)
        {
            return;
        }

        _callbackTarget = target;
        _callbackState = state;
        _callbackKind = kind;
        Volatile.Write(ref _callbackSequence, _callbackSequence + 1);
        Volatile.Write(ref _callbackSince, Stopwatch.GetTimestamp());
    }

    /// <summary>Marks the end of the callback begun last, and reports it when it ran past the budget (loop thread).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EndCallback()
    {
        long since = _callbackSince;
        if (since == 0)
        {
            return;
        }

        long elapsed = Stopwatch.GetTimestamp() - since;
        Volatile.Write(ref _callbackSince, 0);
        RecordCallbackDuration(elapsed);
        if (_budgetTicks != 0 && elapsed >= _budgetTicks)
        {
            ReportEnded(elapsed);
        }

        _callbackTarget = null;
        _callbackState = null;
    }

    private void ReportEnded(long elapsed)
    {
        EventHandler<SlowCallbackEventArgs>? handler = SlowCallback;
        bool log = _logger.IsEnabled(Microsoft.Extensions.Logging.LogLevel.Warning);
        if (handler is null && !log)
        {
            return;
        }

        SlowCallbackEventArgs report = Describe(_callbackKind, _callbackTarget, _callbackState, elapsed, hasEnded: true);
        if (log)
        {
            LoopLog.SlowCallbackEnded(_logger, (long)report.Elapsed.TotalMilliseconds, (long)report.Budget.TotalMilliseconds, report.Kind, report.Target, MethodName(report));
        }

        try
        {
            handler?.Invoke(this, report);
        }
        catch (Exception ex)
        {
            OnCallbackException(ex);
        }
    }

    /// <summary>Called by the watchdog thread: reports the running callback once if it has run past the budget.</summary>
    internal void CheckCallback(long now)
    {
        long sequence = Volatile.Read(ref _callbackSequence);
        long since = Volatile.Read(ref _callbackSince);
        if (since == 0 || sequence == _reportedSequence || now - since < _budgetTicks)
        {
            return;
        }

        object? target = Volatile.Read(ref _callbackTarget);
        object? state = Volatile.Read(ref _callbackState);
        LoopCallbackKind kind = _callbackKind;
        if (Volatile.Read(ref _callbackSequence) != sequence || target is null)
        {
            // The callback ended and another began meanwhile: the fields may be mixed; look again next time.
            return;
        }

        _reportedSequence = sequence;
        EventHandler<SlowCallbackEventArgs>? handler = SlowCallback;
        bool log = _logger.IsEnabled(Microsoft.Extensions.Logging.LogLevel.Warning);
        if (handler is null && !log)
        {
            return;
        }

        SlowCallbackEventArgs report = Describe(kind, target, state, now - since, hasEnded: false);
        if (log)
        {
            LoopLog.SlowCallbackRunning(_logger, (long)report.Elapsed.TotalMilliseconds, (long)report.Budget.TotalMilliseconds, report.Kind, report.Target, MethodName(report));
        }

        try
        {
            handler?.Invoke(this, report);
        }
        catch (Exception ex)
        {
            // Not lost: thrown on the loop as a callback's exception (the loop is busy now, so it comes after the slow callback).
            if (!TryPost(static e => ExceptionDispatchInfo.Capture((Exception)e!).Throw(), ex))
            {
                Environment.FailFast("An EventLoop.SlowCallback handler threw, and its loop is gone.", ex);
            }
        }
    }

    private SlowCallbackEventArgs Describe(LoopCallbackKind kind, object? target, object? state, long elapsedTicks, bool hasEnded)
    {
        string name;
        MethodInfo? method;
        switch (target)
        {
            case Registration registration:
                name = registration.Name ?? TextOf(registration.State) ?? "registration of descriptor " + registration.Handle.DangerousGetHandle().ToString();
                method = registration.Callback.Method;
                break;
            case LoopTimer timer:
                name = TextOf(timer.State) ?? "timer";
                method = timer.Callback.Method;
                break;
            case Backends.ICompletionSink sink:
                // A completion of the backend's I/O (io_uring), named by its stream (a connection names itself).
                name = TextOf(sink) ?? "completion";
                method = null;
                break;
            case Delegate work:
                name = TextOf(state) ?? "posted work";
                method = work.Method;
                break;
            default:
                name = kind.ToString();
                method = null;
                break;
        }

        var elapsed = TimeSpan.FromTicks((long)(elapsedTicks * ((double)TimeSpan.TicksPerSecond / Stopwatch.Frequency)));
        return new SlowCallbackEventArgs(this, kind, name, method, elapsed, CallbackBudget, hasEnded);
    }

    private static string MethodName(SlowCallbackEventArgs report) =>
        report.Method is null ? "method unknown" : report.Method.DeclaringType?.FullName + "." + report.Method.Name;

    /// <summary>The text of a state object, or null for none (or one whose <c>ToString</c> fails or says nothing).</summary>
    private static string? TextOf(object? state)
    {
        if (state is null)
        {
            return null;
        }

        try
        {
            string? text = state.ToString();
            return string.IsNullOrEmpty(text) ? null : text;
        }
        catch (Exception)
        {
            // A description is not worth an exception; the type names the target well enough.
            return state.GetType().FullName;
        }
    }
}
