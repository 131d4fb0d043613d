using System;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// Lets <see cref="ManagedBackend.Remove"/>, called on a thread other than the waiting one, return only once the waiting
/// thread no longer uses the removed socket: .NET's <see cref="System.Net.Sockets.Socket.Dispose()"/> resets the connection
/// instead of closing it gracefully when another thread holds a reference on the socket at that moment, and a socket is
/// typically disposed right after its registration.
/// </summary>
/// <remarks>
/// <para>The waiting thread says which snapshot it uses (<see cref="Use"/>, with the registry's epoch) and when it leaves its
/// wait (<see cref="Leave"/>); an entry removed at epoch E is in no snapshot after E, so a remover waits until the used epoch
/// is past E, or no thread waits.</para>
/// <para><b>Owner and rule.</b> This type is the only owner of <c>_waitThread</c>, <c>_usedEpoch</c> and
/// <c>_removersWaiting</c>. They are written with <see cref="Interlocked"/> and read with <see cref="Volatile"/>; a remover
/// sleeps on the private monitor <c>_gate</c>, which the waiting thread pulses only when a remover is counted in
/// <c>_removersWaiting</c> (so a wait with no remover takes no lock). Never taken together with the registry's gate.</para>
/// </remarks>
internal sealed class ManagedRemoveBarrier
{
    /// <summary>Monitor for <c>_usedEpoch</c> and <c>_waitThread</c> changes that removers wait for.</summary>
    private readonly object _gate = new();

    /// <summary>The managed thread id of the thread inside <see cref="ManagedBackend.Wait"/>, 0 when none.</summary>
    private int _waitThread;

    /// <summary>The epoch of the snapshot the waiting thread uses now (it no longer touches sockets of older ones).</summary>
    private long _usedEpoch;

    /// <summary>Removers blocked until the waiting thread lets go of a removed socket.</summary>
    private int _removersWaiting;

    /// <summary>The calling thread starts a wait. Full fence: pairs with <see cref="WaitUntilUnused"/>, which reads the waiting thread after the removal was published.</summary>
    public void Enter() => Interlocked.Exchange(ref _waitThread, Environment.CurrentManagedThreadId);

    /// <summary>The waiting thread leaves its wait: it uses no socket now.</summary>
    public void Leave()
    {
        Interlocked.Exchange(ref _waitThread, 0);
        PulseRemovers();
    }

    /// <summary>The waiting thread moved to the snapshot of <paramref name="epoch"/>: the sockets of older ones are in no Select.</summary>
    public void Use(long epoch)
    {
        Interlocked.Exchange(ref _usedEpoch, epoch);
        PulseRemovers();
    }

    /// <summary>
    /// From a thread other than the waiting one, blocks until the waiting thread uses a snapshot newer than
    /// <paramref name="removedAt"/>, or leaves its wait; returns at once when no other thread waits.
    /// </summary>
    public void WaitUntilUnused(long removedAt)
    {
        int waiter = Volatile.Read(ref _waitThread);
        if (waiter == 0 || waiter == Environment.CurrentManagedThreadId)
        {
            return;
        }

        Interlocked.Increment(ref _removersWaiting);
        try
        {
            lock (_gate)
            {
                while (Volatile.Read(ref _waitThread) != 0 && Volatile.Read(ref _usedEpoch) <= removedAt)
                {
                    Monitor.Wait(_gate);
                }
            }
        }
        finally
        {
            Interlocked.Decrement(ref _removersWaiting);
        }
    }

    private void PulseRemovers()
    {
        if (Volatile.Read(ref _removersWaiting) != 0)
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        }
    }
}
