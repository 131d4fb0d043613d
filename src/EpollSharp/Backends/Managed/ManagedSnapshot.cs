using System;

namespace EpollSharp.Backends;

/// <summary>
/// The waiting thread's copy of the registered entries: what a scan looks at and a blocking Select sleeps on, so that
/// neither needs the registry's gate. Taken anew (<see cref="ManagedRegistry.TakeSnapshot"/>) at the start of a wait that
/// follows a change.
/// </summary>
/// <remarks>
/// <b>Owner and rule.</b> Owned by the thread in <see cref="ManagedBackend.Wait"/>: only it reads the snapshot, and only it
/// writes it, through <see cref="ManagedRegistry.TakeSnapshot"/>, which copies under the registry's gate. An entry in it may be
/// removed meanwhile (the copy keeps it until the next snapshot); a report for it is dropped at commit.
/// </remarks>
internal sealed class ManagedSnapshot
{
    private ManagedEntry[] _entries = new ManagedEntry[16];

    /// <summary>How many entries the snapshot holds.</summary>
    public int Count { get; private set; }

    /// <summary>The entry at <paramref name="index"/> (below <see cref="Count"/>).</summary>
    public ManagedEntry this[int index] => _entries[index];

    /// <summary>Replaces the contents with the first <paramref name="count"/> of <paramref name="live"/>. Under the registry's gate.</summary>
    public void CopyFrom(ManagedEntry[] live, int count)
    {
        if (_entries.Length < count)
        {
            _entries = new ManagedEntry[Math.Max(count, _entries.Length * 2)];
        }

        Array.Copy(live, _entries, count);
        if (Count > count)
        {
            Array.Clear(_entries, count, Count - count);
        }

        Count = count;
    }

    /// <summary>Lets go of every entry.</summary>
    public void Clear()
    {
        Array.Clear(_entries, 0, _entries.Length);
        Count = 0;
    }
}
