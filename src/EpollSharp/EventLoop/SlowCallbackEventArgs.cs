using System;
using System.Reflection;

namespace EpollSharp;

/// <summary>
/// A loop callback that ran past the loop's budget (<see cref="EventLoopOptions.CallbackBudget"/>): reported while it still
/// runs (<see cref="HasEnded"/> false, from the watchdog thread) and once more when it returns (<see cref="HasEnded"/> true, on
/// the loop thread). See <see cref="EventLoop.SlowCallback"/>.
/// </summary>
public sealed class SlowCallbackEventArgs : EventArgs
{
    internal SlowCallbackEventArgs(EventLoop loop, LoopCallbackKind kind, string target, MethodInfo? method, TimeSpan elapsed, TimeSpan budget, bool hasEnded)
    {
        Loop = loop;
        Kind = kind;
        Target = target;
        Method = method;
        Elapsed = elapsed;
        Budget = budget;
        HasEnded = hasEnded;
    }

    /// <summary>The loop whose thread the callback holds.</summary>
    public EventLoop Loop { get; }

    /// <summary>Readiness, timer or posted work.</summary>
    public LoopCallbackKind Kind { get; }

    /// <summary>
    /// What the callback was for: the registration's <see cref="Registration.Name"/>, or else the text of its
    /// <see cref="Registration.State"/> (a connection's is its id, endpoints and handler type); a timer's or a posted work
    /// item's state; or the kind alone when there is nothing to name.
    /// </summary>
    public string Target { get; }

    /// <summary>The callback's method (for a lambda, the compiler-made method, whose name holds the enclosing method's); null when unknown.</summary>
    public MethodInfo? Method { get; }

    /// <summary>How long the callback had run when reported (its whole duration when <see cref="HasEnded"/>).</summary>
    public TimeSpan Elapsed { get; }

    /// <summary>The budget it ran past.</summary>
    public TimeSpan Budget { get; }

    /// <summary>False: the callback is still running (reported by the watchdog thread); true: it returned after <see cref="Elapsed"/>.</summary>
    public bool HasEnded { get; }

    /// <summary>A one-line description, e.g. for a log.</summary>
    /// <returns>The kind, target, method, elapsed time and budget.</returns>
    public override string ToString() =>
        (HasEnded ? "A loop callback ran " : "A loop callback has been running for ") + ((long)Elapsed.TotalMilliseconds).ToString(System.Globalization.CultureInfo.InvariantCulture) +
        " ms, past its budget of " + ((long)Budget.TotalMilliseconds).ToString(System.Globalization.CultureInfo.InvariantCulture) + " ms: " + Kind + " for " + Target +
        (Method is null ? string.Empty : ", " + Method.DeclaringType?.FullName + "." + Method.Name) + ".";
}
