namespace EpollSharp;

/// <summary>How often a registration is told about a readiness that persists.</summary>
public enum TriggerMode
{
    /// <summary>
    /// Level-triggered (the default): the callback is called on every loop iteration while the handle
    /// stays ready. A callback that does not drain the handle is simply called again.
    /// </summary>
    Level = 0,

    /// <summary>
    /// Edge-triggered: the callback is called when the handle becomes ready, and not again until new
    /// readiness arrives. The callback must read (or write) until the operation would block, or it
    /// may never be told again.
    /// </summary>
    Edge = 1,

    /// <summary>
    /// One-shot: the callback is called once, then the registration is disarmed until
    /// <see cref="Registration.Rearm()"/> (or <see cref="Registration.ChangeInterest(Interest)"/>) arms it again.
    /// </summary>
    OneShot = 2,
}
