namespace EpollSharp.Backends;

/// <summary>
/// The managed backend's trigger modes. Level: whatever is present, on every wait. One-shot: once, then the entry is skipped
/// until a Modify re-arms it. Edge: emulated, because managed APIs show states, not events: the reported bits are
/// remembered; a bit is reported again when it was seen gone and comes back, and readability also when new data arrived
/// since the last look (exactly by the arrival counter on Linux TCP, otherwise when the receive queue's byte count changed).
/// A report carries everything present, as epoll's does.
/// </summary>
/// <remarks>
/// Stateless: the state it reads and writes is the entry's applied and observed fields (<see cref="ManagedEntry.Armed"/>,
/// <see cref="ManagedEntry.Reported"/>, <see cref="ManagedEntry.LastAvailable"/>, <see cref="ManagedEntry.LastArrived"/>), which
/// only the thread in <see cref="ManagedBackend.Wait"/> writes. <see cref="ApplyRequest"/> and <see cref="Committed"/> are
/// called by <see cref="ManagedRegistry"/> under its gate; the rest without it.
/// </remarks>
internal static class ManagedTrigger
{
    /// <summary>
    /// Applies the interest and mode last requested. Re-arms a one-shot entry and forgets what an edge entry reported, so a
    /// readiness still present is reported once more (as EPOLL_CTL_MOD does). Under the registry's gate.
    /// </summary>
    public static void ApplyRequest(ManagedEntry e)
    {
        e.AppliedInterest = e.Interest;
        e.AppliedMode = e.Mode;
        e.AppliedVersion = e.Version;
        e.Armed = true;
        e.Reported = Readiness.None;
    }

    /// <summary>A one-shot entry that reported and was not re-armed: neither scanned nor selected.</summary>
    public static bool IsDisarmed(ManagedEntry e) => e.AppliedMode == TriggerMode.OneShot && !e.Armed;

    /// <summary>
    /// Whether what is <paramref name="present"/> is to be reported now; for an edge entry, also updates what it remembers.
    /// </summary>
    /// <param name="e">The entry, classified by this scan.</param>
    /// <param name="present">What it is ready for now.</param>
    /// <param name="available">The receive queue's byte count; -1 when unknown.</param>
    /// <param name="arrived">The arrival counter (edge entries readable in this scan only); -1 when unknown.</param>
    public static bool ShouldReport(ManagedEntry e, Readiness present, int available, long arrived)
    {
        if (e.AppliedMode != TriggerMode.Edge)
        {
            // Level: whatever is present. One-shot: the same, once (disarmed entries are not scanned).
            return present != Readiness.None;
        }

        // Forget what is gone (so that it is reported when it comes back); report what is new, and readability
        // again when new data arrived since the last look: exactly, by the arrival counter where there is one
        // (Linux TCP), otherwise when the receive queue's byte count changed.
        e.Reported &= present;
        Readiness renewed = present & ~e.Reported;
        if ((present & e.Reported & Readiness.Readable) != 0)
        {
            if (arrived >= 0 && e.LastArrived >= 0)
            {
                if (arrived != e.LastArrived)
                {
                    renewed |= Readiness.Readable;
                }
            }
            else if (available >= 0 && e.LastAvailable >= 0 && available != e.LastAvailable)
            {
                renewed |= Readiness.Readable;
            }
        }

        e.LastAvailable = available;
        e.LastArrived = arrived;
        return renewed != Readiness.None;
    }

    /// <summary>The mode's bookkeeping once <paramref name="readiness"/> was reported: a one-shot disarms, an edge entry remembers it. Under the registry's gate.</summary>
    public static void Committed(ManagedEntry e, Readiness readiness)
    {
        if (e.AppliedMode == TriggerMode.OneShot)
        {
            e.Armed = false;
        }
        else if (e.AppliedMode == TriggerMode.Edge)
        {
            e.Reported = readiness;
        }
    }

    /// <summary>
    /// An edge registration whose readability was reported and is still present (the data was not drained): new data
    /// would not make Select return, so its byte count is re-read while the loop sleeps. A listener has no byte count.
    /// </summary>
    public static bool IsStaleEdge(ManagedEntry e) =>
        e.AppliedMode == TriggerMode.Edge
        && (e.AppliedInterest & Interest.Readable) != 0
        && (e.Reported & Readiness.Readable) != 0
        && !e.EofSeen
        && (e.LastArrived >= 0 || (!e.AvailableUnsupported && e.LastAvailable >= 0));
}
