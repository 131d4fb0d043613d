namespace EpollSharp;

/// <summary>
/// Called on the loop thread when a registered handle is ready. Use <see cref="Registration.State"/>
/// to reach your own object without a closure.
/// </summary>
/// <param name="registration">The registration that is ready.</param>
/// <param name="readiness">What is ready. Never <see cref="Readiness.None"/>.</param>
public delegate void ReadinessCallback(Registration registration, Readiness readiness);
