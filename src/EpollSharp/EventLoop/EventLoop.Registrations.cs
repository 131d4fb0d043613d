using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;

namespace EpollSharp;

public sealed partial class EventLoop
{
    private readonly object _tableLock = new();
    private Registration?[] _slots = Array.Empty<Registration?>();
    private uint[] _generations = Array.Empty<uint>();
    private int[] _freeSlots = Array.Empty<int>();
    private int _freeCount;
    private int _slotsUsed;
    private int _registrationCount;

    /// <summary>How many registrations are live.</summary>
    public int RegistrationCount => Volatile.Read(ref _registrationCount);

    /// <summary>
    /// Watches <paramref name="socket"/> for <paramref name="interest"/> and calls <paramref name="callback"/>
    /// on the loop thread when it is ready. Safe from any thread.
    /// </summary>
    /// <param name="socket">A non-blocking socket (<c>socket.Blocking = false</c>).</param>
    /// <param name="interest">What to be told about.</param>
    /// <param name="callback">Called with the registration and the readiness.</param>
    /// <param name="state">Your object, available as <see cref="Registration.State"/>.</param>
    /// <param name="mode">Level (default), edge or one-shot.</param>
    /// <returns>The registration; dispose it to stop watching.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="socket"/> or <paramref name="callback"/> is null.</exception>
    /// <exception cref="ArgumentException">The socket is blocking, or is already registered with this loop.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="interest"/> or <paramref name="mode"/> is not a defined value.</exception>
    /// <exception cref="ObjectDisposedException">The socket or the loop was disposed.</exception>
    public Registration Register(Socket socket, Interest interest, ReadinessCallback callback, object? state = null, TriggerMode mode = TriggerMode.Level)
    {
        if (socket is null)
        {
            throw new ArgumentNullException(nameof(socket));
        }

        ValidateArguments(interest, callback, mode);
        SafeHandle? handle = SocketHandles.TryGetSafeHandle(socket);
        if (handle is null || handle.IsClosed || handle.IsInvalid)
        {
            throw new ObjectDisposedException(nameof(socket), "The socket was disposed.");
        }

        if (socket.Blocking)
        {
            throw new ArgumentException("The socket must be non-blocking (set socket.Blocking = false) before it is registered: a blocking call would stall every other registration of the loop.", nameof(socket));
        }

        return RegisterCore(handle, socket, interest, callback, state, mode);
    }

    /// <summary>
    /// Watches an OS handle (a Unix descriptor such as a pipe, an eventfd or a socket) for <paramref name="interest"/>.
    /// Safe from any thread. The handle should be non-blocking.
    /// </summary>
    /// <param name="handle">The handle. The managed backend accepts only socket handles.</param>
    /// <param name="interest">What to be told about.</param>
    /// <param name="callback">Called with the registration and the readiness.</param>
    /// <param name="state">Your object, available as <see cref="Registration.State"/>.</param>
    /// <param name="mode">Level (default), edge or one-shot.</param>
    /// <returns>The registration; dispose it to stop watching.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="handle"/> or <paramref name="callback"/> is null.</exception>
    /// <exception cref="ArgumentException">The handle is invalid, cannot be watched (a regular file), or is already registered with this loop.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="interest"/> or <paramref name="mode"/> is not a defined value.</exception>
    /// <exception cref="ObjectDisposedException">The handle or the loop was disposed.</exception>
    public Registration RegisterHandle(SafeHandle handle, Interest interest, ReadinessCallback callback, object? state = null, TriggerMode mode = TriggerMode.Level)
    {
        if (handle is null)
        {
            throw new ArgumentNullException(nameof(handle));
        }

        ValidateArguments(interest, callback, mode);
        if (handle.IsClosed)
        {
            throw new ObjectDisposedException(nameof(handle), "The handle was closed.");
        }

        if (handle.IsInvalid)
        {
            throw new ArgumentException("The handle is invalid.", nameof(handle));
        }

        return RegisterCore(handle, null, interest, callback, state, mode);
    }

    internal void Modify(Registration registration, Interest interest)
    {
        ValidateInterest(interest, nameof(interest));
        lock (registration)
        {
            if (registration.IsDisposed)
            {
                throw new ObjectDisposedException(nameof(Registration), "The registration was disposed.");
            }

            bool latched = registration.HangupLatched;
            if (interest != Interest.None)
            {
                // With something to read or write, the user can act on the hang-up again: plain level semantics.
                registration.HangupLatched = false;
            }

            bool added = false;
            try
            {
                AddRefHandle(registration, ref added);
                _backend.Modify(registration.Target, registration.Token, interest, registration.EffectiveMode);
                registration.Interest = interest;
            }
            catch
            {
                registration.HangupLatched = latched;
                throw;
            }
            finally
            {
                if (added)
                {
                    registration.Handle.DangerousRelease();
                }
            }
        }
    }

    internal void Deregister(Registration registration)
    {
        lock (registration)
        {
            if (!registration.MarkDisposed())
            {
                return;
            }

            // If the handle was closed first, the kernel already forgot the descriptor, and its number may belong to
            // a new handle by now: removing "it" would remove that one. So remove only while the handle is open.
            bool added = false;
            try
            {
                registration.Handle.DangerousAddRef(ref added);
                _backend.Remove(registration.Target);
            }
            catch (ObjectDisposedException)
            {
                // The handle was closed (the kernel dropped it), or the backend was released with the loop.
            }
            finally
            {
                if (added)
                {
                    registration.Handle.DangerousRelease();
                }
            }
        }

        FreeSlot(registration);
    }

    private static void AddRefHandle(Registration registration, ref bool added)
    {
        try
        {
            registration.Handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            throw new ObjectDisposedException(
                registration.Socket is null ? "handle" : "socket",
                "The registered socket or handle was closed; dispose the registration.");
        }
    }

    /// <summary>Delivers one event: finds the registration by token, checks it is the same live one, filters by interest.</summary>
    private void Dispatch(ulong token, Readiness readiness, SocketError socketError)
    {
        uint slot = (uint)token;
        Registration?[] slots = Volatile.Read(ref _slots);
        if (slot >= (uint)slots.Length)
        {
            return;
        }

        Registration? registration = Volatile.Read(ref slots[slot]);
        if (registration is null || registration.Token != token || registration.IsDisposed)
        {
            return;
        }

        Interest interest = registration.Interest;
        Readiness allowed = Readiness.Closed | Readiness.Error;
        if ((interest & Interest.Readable) != 0)
        {
            allowed |= Readiness.Readable | Readiness.ReadClosed;
        }

        if ((interest & Interest.Writable) != 0)
        {
            allowed |= Readiness.Writable;
        }

        readiness &= allowed;
        if (readiness == Readiness.None)
        {
            return;
        }

        if (registration.HangupLatched && (readiness & (Readiness.Readable | Readiness.Writable)) == 0)
        {
            // Reported once already: the latch's own re-arm (and a backend that reports a lasting hang-up again) adds
            // nothing new. ChangeInterest with something to read or write clears the latch.
            return;
        }

        registration.ReportedSocketError = socketError;
        try
        {
            registration.Invoke(readiness);
        }
        catch (Exception ex)
        {
            OnCallbackException(ex);
        }
        finally
        {
            registration.ReportedSocketError = SocketError.Success;
        }

        // A hang-up or error with nothing the callback can read or write persists, and level-triggered it would be
        // reported on every wait: latch it (report once) instead of spinning.
        if ((readiness & (Readiness.Readable | Readiness.Writable)) == 0
            && registration.Mode == TriggerMode.Level
            && !registration.HangupLatched)
        {
            LatchHangup(registration);
        }
    }

    /// <summary>
    /// A hang-up or error persists: in level mode the kernel would report it on every wait. Switch the
    /// registration to edge-triggered so it is reported once (and again only on a new change).
    /// </summary>
    private void LatchHangup(Registration registration)
    {
        lock (registration)
        {
            if (registration.IsDisposed)
            {
                return;
            }

            registration.HangupLatched = true;
            bool added = false;
            try
            {
                registration.Handle.DangerousAddRef(ref added);
                _backend.Modify(registration.Target, registration.Token, registration.Interest, registration.EffectiveMode);
            }
            catch (ObjectDisposedException)
            {
                // Closed meanwhile: the kernel no longer reports it.
            }
            finally
            {
                if (added)
                {
                    registration.Handle.DangerousRelease();
                }
            }
        }
    }

    private Registration RegisterCore(SafeHandle handle, Socket? socket, Interest interest, ReadinessCallback callback, object? state, TriggerMode mode)
    {
        ThrowIfDisposed();
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            throw new ObjectDisposedException(socket is null ? nameof(handle) : nameof(socket), "The handle was closed.");
        }

        var registration = new Registration(this, handle, socket, interest, mode, callback, state);
        bool slotTaken = false;
        try
        {
            AllocateSlot(registration);
            slotTaken = true;
            _backend.Add(registration.Target, registration.Token, interest, mode);
            return registration;
        }
        catch
        {
            registration.MarkDisposed();
            if (slotTaken)
            {
                FreeSlot(registration);
            }

            throw;
        }
        finally
        {
            // The reference is held only for the duration of the call: a registration must not keep a socket from
            // closing (Socket.Dispose waits for outstanding references).
            handle.DangerousRelease();
        }
    }

    private static void ValidateArguments(Interest interest, ReadinessCallback callback, TriggerMode mode)
    {
        if (callback is null)
        {
            throw new ArgumentNullException(nameof(callback));
        }

        ValidateInterest(interest, nameof(interest));
        if (mode is not (TriggerMode.Level or TriggerMode.Edge or TriggerMode.OneShot))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown TriggerMode value.");
        }
    }

    private static void ValidateInterest(Interest interest, string paramName)
    {
        if ((interest & ~Interest.ReadWrite) != 0)
        {
            throw new ArgumentOutOfRangeException(paramName, interest, "Interest may only combine Readable and Writable.");
        }
    }

    private void InitializeRegistrations()
    {
        _slots = new Registration?[64];
        _generations = new uint[64];
        _freeSlots = new int[64];
    }

    private void AllocateSlot(Registration registration)
    {
        lock (_tableLock)
        {
            ThrowIfDisposed();
            int slot;
            if (_freeCount > 0)
            {
                slot = _freeSlots[--_freeCount];
            }
            else
            {
                if (_slotsUsed == _slots.Length)
                {
                    var slots = new Registration?[_slots.Length * 2];
                    Array.Copy(_slots, slots, _slots.Length);
                    Array.Resize(ref _generations, slots.Length);
                    Array.Resize(ref _freeSlots, slots.Length);
                    Volatile.Write(ref _slots, slots);
                }

                slot = _slotsUsed++;
            }

            uint generation = unchecked(++_generations[slot]);
            registration.Token = ((ulong)generation << 32) | (uint)slot;
            Volatile.Write(ref _slots[slot], registration);
            _registrationCount++;
        }
    }

    private void FreeSlot(Registration registration)
    {
        lock (_tableLock)
        {
            int slot = (int)(uint)registration.Token;
            if (slot < _slots.Length && ReferenceEquals(_slots[slot], registration))
            {
                Volatile.Write(ref _slots[slot], null);
                _freeSlots[_freeCount++] = slot;
                _registrationCount--;
            }
        }
    }

    private void DisposeAllRegistrations()
    {
        Registration?[] slots;
        lock (_tableLock)
        {
            slots = (Registration?[])_slots.Clone();
        }

        foreach (Registration? registration in slots)
        {
            registration?.Dispose();
        }
    }
}
