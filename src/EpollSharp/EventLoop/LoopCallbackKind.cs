namespace EpollSharp;

/// <summary>What kind of loop callback a <see cref="SlowCallbackEventArgs"/> report is about.</summary>
public enum LoopCallbackKind
{
    /// <summary>A readiness callback of a <see cref="Registration"/> (every connection's reading and writing runs in one).</summary>
    Readiness = 1,

    /// <summary>A <see cref="LoopTimer"/>'s callback.</summary>
    Timer = 2,

    /// <summary>Work posted with <see cref="EventLoop.Post(System.Action)"/> and its overloads, or an <c>await</c> continuation on the loop.</summary>
    PostedWork = 3,
}
