using System;
using K = EpollSharp.Interop.Kqueue;

namespace EpollSharp.Backends;

/// <summary>Which kqueue ABI the loaded library has.</summary>
internal enum KqueueFlavor
{
    /// <summary>macOS: <c>struct kevent</c> of 32 bytes, <c>EVFILT_USER</c> = -10.</summary>
    Darwin,

    /// <summary>FreeBSD 12 and later: <c>struct kevent</c> of 64 bytes (64-bit <c>data</c>, <c>ext[4]</c>), <c>EVFILT_USER</c> = -11.</summary>
    FreeBsd,

    /// <summary>libkqueue on Linux: <c>struct kevent</c> of 32 bytes like macOS, <c>EVFILT_USER</c> = -11 like FreeBSD.</summary>
    LibKqueue,
}

/// <summary>One returned kevent, with the fields the backend reads.</summary>
internal struct KeventFields
{
    public nuint Ident;
    public short Filter;
    public ushort Flags;
    public uint Fflags;
    public long Data;
    public nint Udata;
}

/// <summary>
/// The ABI facts of one <see cref="KqueueFlavor"/>: the size of <c>struct kevent</c>, the constants that differ, and
/// how to write a change and read an event in that layout. The backend keeps its event list as raw bytes
/// (<see cref="EventSize"/> per event) and goes through this class for every field.
/// </summary>
internal sealed unsafe class KqueueAbi
{
    internal static readonly KqueueAbi Darwin = new(
        KqueueFlavor.Darwin, sizeof(K.KeventDarwin), K.Darwin.EVFILT_USER,
        K.Darwin.NOTE_SECONDS, 0, K.Darwin.NOTE_USECONDS, K.Darwin.NOTE_NSECONDS, K.Darwin.NOTE_ABSOLUTE);

    internal static readonly KqueueAbi FreeBsd = new(
        KqueueFlavor.FreeBsd, sizeof(K.KeventFreeBsd), K.FreeBsd.EVFILT_USER,
        K.FreeBsd.NOTE_SECONDS, K.FreeBsd.NOTE_MSECONDS, K.FreeBsd.NOTE_USECONDS, K.FreeBsd.NOTE_NSECONDS, K.FreeBsd.NOTE_ABSTIME);

    internal static readonly KqueueAbi LibKqueue = new(
        KqueueFlavor.LibKqueue, sizeof(K.KeventDarwin), K.LibKqueue.EVFILT_USER,
        K.LibKqueue.NOTE_SECONDS, 0, K.LibKqueue.NOTE_USECONDS, K.LibKqueue.NOTE_NSECONDS, K.LibKqueue.NOTE_ABSOLUTE);

    private KqueueAbi(KqueueFlavor flavor, int eventSize, short evfiltUser, uint noteSeconds, uint noteMilliseconds, uint noteMicroseconds, uint noteNanoseconds, uint noteAbsolute)
    {
        Flavor = flavor;
        EventSize = eventSize;
        EvfiltUser = evfiltUser;
        NoteSeconds = noteSeconds;
        NoteMilliseconds = noteMilliseconds;
        NoteMicroseconds = noteMicroseconds;
        NoteNanoseconds = noteNanoseconds;
        NoteAbsolute = noteAbsolute;
    }

    internal KqueueFlavor Flavor { get; }

    /// <summary><c>sizeof(struct kevent)</c>.</summary>
    internal int EventSize { get; }

    /// <summary><c>EVFILT_USER</c>, the filter of the waker.</summary>
    internal short EvfiltUser { get; }

    /// <summary>
    /// The timer unit flags of <c>EVFILT_TIMER</c> (0 where the flavour has none: only FreeBSD has
    /// <c>NOTE_MSECONDS</c>, milliseconds being the default unit everywhere). The backend uses no kqueue timers (the
    /// loop's timers set the wait's timeout); they are kept, and tested against the headers, because they are the
    /// part of the ABI that differs most between flavours.
    /// </summary>
    internal uint NoteSeconds { get; }

    /// <summary>FreeBSD's <c>NOTE_MSECONDS</c>; 0 elsewhere.</summary>
    internal uint NoteMilliseconds { get; }

    /// <summary><c>NOTE_USECONDS</c>.</summary>
    internal uint NoteMicroseconds { get; }

    /// <summary><c>NOTE_NSECONDS</c>.</summary>
    internal uint NoteNanoseconds { get; }

    /// <summary><c>NOTE_ABSOLUTE</c> (macOS, libkqueue) or <c>NOTE_ABSTIME</c> (FreeBSD).</summary>
    internal uint NoteAbsolute { get; }

    internal static KqueueAbi For(KqueueFlavor flavor) => flavor switch
    {
        KqueueFlavor.Darwin => Darwin,
        KqueueFlavor.FreeBsd => FreeBsd,
        KqueueFlavor.LibKqueue => LibKqueue,
        _ => throw new ArgumentOutOfRangeException(nameof(flavor), flavor, "Unknown kqueue flavour."),
    };

    /// <summary>Writes one change (<c>EV_SET</c>) at <paramref name="destination"/>; <c>data</c> and FreeBSD's <c>ext</c> are zeroed.</summary>
    internal void Write(byte* destination, nuint ident, short filter, ushort flags, uint fflags, nint udata)
    {
        if (Flavor == KqueueFlavor.FreeBsd)
        {
            var ev = default(K.KeventFreeBsd);
            ev.ident = ident;
            ev.filter = filter;
            ev.flags = flags;
            ev.fflags = fflags;
            ev.udata = udata;
            *(K.KeventFreeBsd*)destination = ev;
        }
        else
        {
            var ev = default(K.KeventDarwin);
            ev.ident = ident;
            ev.filter = filter;
            ev.flags = flags;
            ev.fflags = fflags;
            ev.udata = udata;
            *(K.KeventDarwin*)destination = ev;
        }
    }

    /// <summary>Reads the event at index <paramref name="index"/> of the list at <paramref name="list"/>.</summary>
    internal KeventFields Read(byte* list, int index)
    {
        byte* source = list + ((nint)index * EventSize);
        if (Flavor == KqueueFlavor.FreeBsd)
        {
            var ev = (K.KeventFreeBsd*)source;
            return new KeventFields { Ident = ev->ident, Filter = ev->filter, Flags = ev->flags, Fflags = ev->fflags, Data = ev->data, Udata = ev->udata };
        }

        var dev = (K.KeventDarwin*)source;
        return new KeventFields { Ident = dev->ident, Filter = dev->filter, Flags = dev->flags, Fflags = dev->fflags, Data = dev->data, Udata = dev->udata };
    }
}
