using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Native;

/// <summary>
/// One entry of an epoll event list: the events that fired and the 64-bit user data given when the
/// descriptor was added.
/// </summary>
/// <remarks>
/// <para>
/// The kernel's <c>struct epoll_event</c> is 12 bytes and packed on x86 and x86-64, and 16 bytes with the
/// data 8-byte aligned on arm64 and every other architecture. A single .NET type cannot have both
/// layouts, so this type always has the natural 16-byte layout, and
/// <see cref="EpollHandle.Wait(Span{EpollEvent}, int)"/> widens the packed records in place on x86 and
/// x86-64 after the kernel wrote them (no copy buffer, no allocation). The layout that is passed to the
/// kernel is checked against a compiled C probe by the tests.
/// </para>
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
public readonly struct EpollEvent : IEquatable<EpollEvent>
{
    private readonly EpollEvents _events;
    private readonly ulong _data;

    /// <summary>Creates an event entry.</summary>
    /// <param name="events">The event flags.</param>
    /// <param name="data">The user data.</param>
    public EpollEvent(EpollEvents events, ulong data)
    {
        _events = events;
        _data = data;
    }

    /// <summary>The events that fired.</summary>
    public EpollEvents Events => _events;

    /// <summary>The 64-bit user data registered with the descriptor.</summary>
    public ulong Data => _data;

    /// <inheritdoc/>
    public bool Equals(EpollEvent other) => _events == other._events && _data == other._data;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is EpollEvent other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_events, _data);

    /// <inheritdoc/>
    public override string ToString() => $"{{ Events = {_events}, Data = 0x{_data:x} }}";

    /// <summary>Compares two entries for equality.</summary>
    /// <param name="left">The first entry.</param>
    /// <param name="right">The second entry.</param>
    /// <returns><see langword="true"/> when events and data are equal.</returns>
    public static bool operator ==(EpollEvent left, EpollEvent right) => left.Equals(right);

    /// <summary>Compares two entries for inequality.</summary>
    /// <param name="left">The first entry.</param>
    /// <param name="right">The second entry.</param>
    /// <returns><see langword="true"/> when events or data differ.</returns>
    public static bool operator !=(EpollEvent left, EpollEvent right) => !left.Equals(right);
}

/// <summary>The native <c>struct epoll_event</c> layout of the running architecture.</summary>
internal static class EpollEventLayout
{
    /// <summary>x86 and x86-64 use the packed 12-byte layout (<c>__EPOLL_PACKED</c>).</summary>
    internal static readonly bool IsPacked =
        RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86;

    /// <summary>sizeof(struct epoll_event) on this architecture.</summary>
    internal static int NativeSize => IsPacked ? 12 : 16;

    /// <summary>offsetof(struct epoll_event, data) on this architecture.</summary>
    internal static int DataOffset => IsPacked ? 4 : 8;

    /// <summary>The packed layout of x86 and x86-64.</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    internal struct Packed
    {
        internal uint Events;
        internal ulong Data;
    }

    /// <summary>The aligned layout of every other architecture.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Aligned
    {
        internal uint Events;
        internal ulong Data;
    }

    /// <summary>
    /// Widens <paramref name="count"/> packed 12-byte records at the start of <paramref name="buffer"/>
    /// into 16-byte <see cref="EpollEvent"/> entries, in place. Works from the last record back, so that
    /// no record is overwritten before it is read.
    /// </summary>
    internal static unsafe void WidenInPlace(EpollEvent* buffer, int count)
    {
        byte* bytes = (byte*)buffer;
        for (int i = count - 1; i >= 0; i--)
        {
            Packed* src = (Packed*)(bytes + (i * 12));
            uint events = src->Events;
            ulong data = src->Data;
            buffer[i] = new EpollEvent((EpollEvents)events, data);
        }
    }
}
