using System;
using System.Collections.Generic;
using System.Net.Sockets;

namespace EpollSharp.Backends;

/// <summary>Which of the three lists of a <see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, int)"/> call a <see cref="ManagedSelectList"/> is.</summary>
internal enum ManagedSelectKind
{
    /// <summary>The read list: data, end of stream, a reset, a pending connection.</summary>
    Read,

    /// <summary>The write list: room to send.</summary>
    Write,

    /// <summary>The error list: POLLERR on Unix, a failed connect on Windows.</summary>
    Error,
}

/// <summary>
/// One list of a Socket.Select call: <see cref="Sockets"/>, the list Select is given and leaves only the ready sockets in,
/// plus a copy of what was asked (Select empties the list, and a sliced wait selects again) and, for a scan, the entry
/// each socket belongs to (to map the ready sockets back).
/// </summary>
/// <remarks>
/// Not thread-safe. It belongs to one <see cref="ManagedSelectSet"/>, whose owner is the only thread that touches it (see there).
/// Holds at most <see cref="ManagedSelectSet.Capacity"/> sockets; the callers plan their groups so that the three lists of a
/// set together never hold more.
/// </remarks>
internal sealed class ManagedSelectList
{
    private readonly Socket?[] _asked = new Socket?[ManagedSelectSet.Capacity];
    private readonly ManagedEntry?[] _entries = new ManagedEntry?[ManagedSelectSet.Capacity];

    /// <summary>Creates an empty list of the given kind.</summary>
    public ManagedSelectList(ManagedSelectKind kind)
    {
        Kind = kind;
        Sockets = new List<Socket>(ManagedSelectSet.Capacity);
    }

    /// <summary>Which list of the Select call this is; says which hit flag of an entry <see cref="MarkHits"/> sets.</summary>
    public ManagedSelectKind Kind { get; }

    /// <summary>The list handed to Select: the asked sockets before the call, the ready ones (in the same order) after it.</summary>
    public List<Socket> Sockets { get; }

    /// <summary>How many sockets were asked about.</summary>
    public int Count { get; private set; }

    /// <summary><see cref="Sockets"/>, or null when it is empty (Select wants null for a list it is not to look at).</summary>
    public List<Socket>? ForSelect => Sockets.Count > 0 ? Sockets : null;

    /// <summary>Asks about <paramref name="socket"/>, on behalf of <paramref name="entry"/> when the result is to be mapped back.</summary>
    public void Add(Socket socket, ManagedEntry? entry = null)
    {
        Sockets.Add(socket);
        _asked[Count] = socket;
        _entries[Count] = entry;
        Count++;
    }

    /// <summary>Sets this list's hit flag on the entry of every socket Select left in <see cref="Sockets"/>.</summary>
    public void MarkHits()
    {
        // Select keeps the ready sockets in their order: walk both lists together.
        int p = 0;
        for (int j = 0; j < Sockets.Count; j++)
        {
            Socket s = Sockets[j];
            for (int tries = 0; tries < Count; tries++)
            {
                int k = p;
                p = p + 1 == Count ? 0 : p + 1;
                if (ReferenceEquals(_asked[k], s))
                {
                    MarkHit(_entries[k]!);
                    break;
                }
            }
        }
    }

    /// <summary>Puts every asked socket back into <see cref="Sockets"/>, for another Select over the same sockets.</summary>
    public void Refill()
    {
        Sockets.Clear();
        for (int i = 0; i < Count; i++)
        {
            Sockets.Add(_asked[i]!);
        }
    }

    /// <summary>Empties the list and lets go of the sockets and entries it held.</summary>
    public void Clear()
    {
        Sockets.Clear();
        Array.Clear(_asked, 0, Count);
        Array.Clear(_entries, 0, Count);
        Count = 0;
    }

    private void MarkHit(ManagedEntry e)
    {
        switch (Kind)
        {
            case ManagedSelectKind.Read:
                e.HitRead = true;
                break;
            case ManagedSelectKind.Write:
                e.HitWrite = true;
                break;
            default:
                e.HitError = true;
                break;
        }
    }
}

/// <summary>The three lists of one Socket.Select call, each a <see cref="ManagedSelectList"/> that knows its kind.</summary>
/// <remarks>
/// Owned by one thread: the scan's set and the loop's own blocking set by the thread in <see cref="ManagedBackend.Wait"/>; a
/// watcher's set by the loop thread while the watcher is parked and by the watcher between <see cref="ManagedWatcher.Go"/>
/// and its report to <see cref="ManagedWatcherPool.WatcherDone"/> (the pool's park protocol hands it over).
/// </remarks>
internal sealed class ManagedSelectSet
{
    /// <summary>The most list entries (read + write + error, wake socket included) in one Socket.Select call: below the 80 at which it allocates.</summary>
    public const int Capacity = 64;

    /// <summary>The read list.</summary>
    public ManagedSelectList Read { get; } = new(ManagedSelectKind.Read);

    /// <summary>The write list.</summary>
    public ManagedSelectList Write { get; } = new(ManagedSelectKind.Write);

    /// <summary>The error list.</summary>
    public ManagedSelectList Error { get; } = new(ManagedSelectKind.Error);

    /// <summary>How many sockets the three lists ask about.</summary>
    public int Count => Read.Count + Write.Count + Error.Count;

    /// <summary>After <see cref="Select"/>: how many list entries are ready.</summary>
    public int ReadyCount => Read.Sockets.Count + Write.Sockets.Count + Error.Sockets.Count;

    /// <summary>Socket.Select over the non-empty lists; a negative <paramref name="microseconds"/> waits without a limit.</summary>
    public void Select(int microseconds) => Socket.Select(Read.ForSelect, Write.ForSelect, Error.ForSelect, microseconds);

    /// <summary>After <see cref="Select"/>: sets the entries' hit flags from the three lists.</summary>
    public void MarkHits()
    {
        Read.MarkHits();
        Write.MarkHits();
        Error.MarkHits();
    }

    /// <summary>Puts every asked socket back into the lists, for another Select.</summary>
    public void Refill()
    {
        Read.Refill();
        Write.Refill();
        Error.Refill();
    }

    /// <summary>Empties the three lists.</summary>
    public void Clear()
    {
        Read.Clear();
        Write.Clear();
        Error.Clear();
    }
}
