using System;

namespace EpollSharp.Backends;

/// <summary>
/// What one scan found: the candidates to report (an entry and its readiness, in scan order, at most the caller's batch) and
/// the entries whose handle was closed by their owner, to drop. <see cref="ManagedRegistry.Commit"/> turns it into events.
/// </summary>
/// <remarks>
/// <b>Owner and rule.</b> Owned by the thread in <see cref="ManagedBackend.Wait"/>: filled by <see cref="ManagedScan"/> without a
/// lock, emptied by <see cref="ManagedRegistry.Commit"/> on the same thread (under the registry's gate, which that needs for
/// the entries, not for this).
/// </remarks>
internal sealed class ManagedScanResult
{
    private ManagedEntry?[] _candidates;
    private Readiness[] _readiness;
    private ManagedEntry[] _evict = new ManagedEntry[16];

    /// <summary>Room for <paramref name="maxEvents"/> candidates (grown when a wait is given a larger batch).</summary>
    public ManagedScanResult(int maxEvents)
    {
        _candidates = new ManagedEntry?[Math.Max(1, maxEvents)];
        _readiness = new Readiness[_candidates.Length];
    }

    /// <summary>How many candidates were found.</summary>
    public int CandidateCount { get; private set; }

    /// <summary>How many entries are to be dropped.</summary>
    public int EvictCount { get; private set; }

    /// <summary>Whether the batch is full: the scan stops.</summary>
    public bool IsFull => CandidateCount == Limit;

    /// <summary>The most candidates of this scan (the caller's batch).</summary>
    private int Limit { get; set; }

    /// <summary>Starts a scan for a batch of <paramref name="limit"/> events.</summary>
    public void Start(int limit)
    {
        if (_candidates.Length < limit)
        {
            _candidates = new ManagedEntry?[limit];
            _readiness = new Readiness[limit];
        }

        CandidateCount = 0;
        Limit = limit;
    }

    /// <summary>Adds <paramref name="e"/>, to be reported with <paramref name="readiness"/>.</summary>
    public void AddCandidate(ManagedEntry e, Readiness readiness)
    {
        _candidates[CandidateCount] = e;
        _readiness[CandidateCount] = readiness;
        CandidateCount++;
    }

    /// <summary>Candidate <paramref name="index"/> and its readiness; lets go of it.</summary>
    public ManagedEntry TakeCandidate(int index, out Readiness readiness)
    {
        ManagedEntry e = _candidates[index]!;
        _candidates[index] = null;
        readiness = _readiness[index];
        return e;
    }

    /// <summary>Forgets the candidates (each was taken).</summary>
    public void ClearCandidates() => CandidateCount = 0;

    /// <summary>Queues <paramref name="e"/>, whose handle was closed by its owner, to be dropped (once).</summary>
    public void QueueEvict(ManagedEntry e)
    {
        if (e.EvictQueued)
        {
            return;
        }

        e.EvictQueued = true;
        if (EvictCount == _evict.Length)
        {
            Array.Resize(ref _evict, _evict.Length * 2);
        }

        _evict[EvictCount++] = e;
    }

    /// <summary>Entry <paramref name="index"/> to drop; lets go of it.</summary>
    public ManagedEntry TakeEvicted(int index)
    {
        ManagedEntry e = _evict[index];
        _evict[index] = null!;
        return e;
    }

    /// <summary>Forgets the entries to drop (each was taken).</summary>
    public void ClearEvicted() => EvictCount = 0;
}
