using System;
using System.Threading;

namespace EpollSharp;

/// <summary>
/// The live registrations of one <see cref="EventLoop"/>, by token: what the kernel hands back with each event is looked
/// up here, never trusted as a pointer. Owned by the loop; nothing else holds it.
/// </summary>
/// <remarks>
/// <para><b>Tokens.</b> A token is 64 bits: the slot (an index into the table) in the low 32, the slot's generation in
/// the high 32. The table gives a registration its token in <see cref="Allocate"/> (written to
/// <see cref="Registration.Token"/>), and the loop passes that token to the backend, which returns it with every event.</para>
/// <para><b>The generation rule.</b> Each time a slot is taken its generation goes up by one, starting at 1 and skipping 0
/// when it wraps. A freed slot is reused (last freed, first taken), and its next registration gets a token that differs
/// from every earlier one of that slot in the generation, so an event for a disposed registration that is still in a
/// batch, or that arrives for a descriptor number the OS reused, finds no match in <see cref="Find"/> and is dropped.
/// No live token is 0 (generation 0 is never given out), and none is <see cref="ulong.MaxValue"/> (a slot index is
/// below 2^31), which backends keep for their own wake-up event.</para>
/// <para><b>Threads.</b> <see cref="Allocate"/>, <see cref="Free"/> and <see cref="Close"/> may be called from any thread;
/// they take the table's private lock, which is held only for the few instructions of the bookkeeping (never during a
/// system call or a callback). <see cref="Find"/> is the loop thread's, on every event, and takes no lock: the slot
/// array and each slot are published with <c>Volatile.Write</c> after the registration's token is
/// set, and read with <c>Volatile.Read</c>, so a reader sees either the old array (whose live entries
/// were copied, not moved) or the new one, and a registration only with its token. A registration freed on another
/// thread while the loop reads its slot may still be found once; the loop checks <see cref="Registration.IsDisposed"/>
/// after the lookup.</para>
/// </remarks>
internal sealed class RegistrationTable
{
    private const int InitialCapacity = 64;

    private readonly object _gate = new();
    private Registration?[] _slots = new Registration?[InitialCapacity];
    private uint[] _generations = new uint[InitialCapacity];
    private int[] _freeSlots = new int[InitialCapacity];
    private int _freeCount;
    private int _slotsUsed;
    private int _count;
    private bool _closed;

    /// <summary>How many registrations are in the table.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Puts <paramref name="registration"/> in a free slot and gives it its token (see the generation rule).</summary>
    /// <param name="registration">A new registration, not in the table yet.</param>
    /// <exception cref="ObjectDisposedException">The table was closed: the loop was released.</exception>
    public void Allocate(Registration registration)
    {
        lock (_gate)
        {
            if (_closed)
            {
                throw new ObjectDisposedException(nameof(EventLoop));
            }

            int slot;
            if (_freeCount > 0)
            {
                slot = _freeSlots[--_freeCount];
            }
            else
            {
                if (_slotsUsed == _slots.Length)
                {
                    Grow();
                }

                slot = _slotsUsed++;
            }

            uint generation = unchecked(_generations[slot] + 1);
            if (generation == 0)
            {
                generation = 1;
            }

            _generations[slot] = generation;
            registration.Token = ((ulong)generation << 32) | (uint)slot;
            Volatile.Write(ref _slots[slot], registration);
            _count++;
        }
    }

    /// <summary>Empties the slot of <paramref name="registration"/>, if it still holds it, for reuse. Idempotent.</summary>
    /// <param name="registration">A registration given a token by <see cref="Allocate"/>.</param>
    public void Free(Registration registration)
    {
        lock (_gate)
        {
            int slot = (int)(uint)registration.Token;
            if (slot < _slots.Length && ReferenceEquals(_slots[slot], registration))
            {
                Volatile.Write(ref _slots[slot], null);
                _freeSlots[_freeCount++] = slot;
                _count--;
            }
        }
    }

    /// <summary>The registration that <paramref name="token"/> names, or <see langword="null"/> when that one was freed (or never was). Lock-free; for the loop thread.</summary>
    /// <param name="token">A token as a backend reported it.</param>
    /// <returns>The registration, which may have been disposed on another thread a moment ago.</returns>
    public Registration? Find(ulong token)
    {
        uint slot = (uint)token;
        Registration?[] slots = Volatile.Read(ref _slots);
        if (slot >= (uint)slots.Length)
        {
            return null;
        }

        Registration? registration = Volatile.Read(ref slots[slot]);
        return registration is not null && registration.Token == token ? registration : null;
    }

    /// <summary>Refuses every later <see cref="Allocate"/> and returns the registrations in the table now, for the loop to dispose.</summary>
    /// <returns>A copy of the slots (null where free).</returns>
    public Registration?[] Close()
    {
        lock (_gate)
        {
            _closed = true;
            return (Registration?[])_slots.Clone();
        }
    }

    /// <summary>Doubles the capacity. The new slot array is published only once it holds every live entry.</summary>
    private void Grow()
    {
        var slots = new Registration?[_slots.Length * 2];
        Array.Copy(_slots, slots, _slots.Length);
        Array.Resize(ref _generations, slots.Length);
        Array.Resize(ref _freeSlots, slots.Length);
        Volatile.Write(ref _slots, slots);
    }
}
