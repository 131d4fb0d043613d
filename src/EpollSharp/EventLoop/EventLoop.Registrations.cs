using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using EpollSharp.Native;

namespace EpollSharp;

public sealed partial class EventLoop
{
    /// <summary>The live registrations by token; the loop owns it (see <see cref="RegistrationTable"/> for its rules).</summary>
    private readonly RegistrationTable _registrations = new();

    /// <summary>How many registrations are live.</summary>
    public int RegistrationCount => _registrations.Count;

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

    /// <summary>
    /// Step 2 of the path in docs/articles/concepts.md: holds the handle open for the call, gives the registration its
    /// token from the table, and asks the backend to watch the descriptor with that token (<c>epoll_ctl(ADD)</c>).
    /// </summary>
    private Registration RegisterCore(SafeHandle handle, Socket? socket, Interest interest, ReadinessCallback callback, object? state, TriggerMode mode)
    {
        ThrowIfDisposed();

        // The reference is held only for the duration of the call: a registration must not keep a socket from closing
        // (Socket.Dispose waits for outstanding references).
        using SafeHandleLease lease = AcquireHandle(handle, socket, "The handle was closed.");
        var registration = new Registration(this, handle, socket, interest, mode, callback, state);
        bool allocated = false;
        try
        {
            _registrations.Allocate(registration);
            allocated = true;
            _backend.Add(registration.Target, registration.Token, interest, mode);
            return registration;
        }
        catch
        {
            registration.MarkDisposed();
            if (allocated)
            {
                _registrations.Free(registration);
            }

            throw;
        }
    }

    /// <summary>
    /// <see cref="Registration.ChangeInterest(Interest)"/> and <see cref="Registration.Rearm()"/>: under the registration's
    /// gate, applies the interest (and the mode the hang-up latch implies) through the backend (<c>epoll_ctl(MOD)</c>).
    /// </summary>
    internal void Modify(Registration registration, Interest interest)
    {
        ValidateInterest(interest, nameof(interest));
        lock (registration.Gate)
        {
            if (registration.IsDisposed)
            {
                throw new ObjectDisposedException(nameof(Registration), "The registration was disposed.");
            }

            bool latched = registration.HangupLatched;
            Interest previous = registration.Interest;
            if (interest != Interest.None)
            {
                // With something to read or write, the user can act on the hang-up again: plain level semantics.
                registration.HangupLatched = false;
            }

            try
            {
                using SafeHandleLease lease = AcquireHandle(
                    registration.Handle, registration.Socket, "The registered socket or handle was closed; dispose the registration.");

                // Before the backend: from another thread, the loop may dispatch the new interest's first event before
                // this thread runs on, and the dispatch filters by the registration's interest.
                registration.Interest = interest;
                _backend.Modify(registration.Target, registration.Token, interest, registration.EffectiveMode);
            }
            catch
            {
                registration.Interest = previous;
                registration.HangupLatched = latched;
                throw;
            }
        }
    }

    /// <summary>
    /// <see cref="Registration.Dispose"/>, and the loop's release for each registration left: marks it disposed, stops
    /// the backend watching it (<c>epoll_ctl(DEL)</c>) while its handle is still open, and frees its slot.
    /// </summary>
    internal void Deregister(Registration registration)
    {
        lock (registration.Gate)
        {
            if (!registration.MarkDisposed())
            {
                return;
            }

            // If the handle was closed first, the kernel already forgot the descriptor, and its number may belong to
            // a new handle by now: removing "it" would remove that one. So remove only while the handle is open.
            try
            {
                using SafeHandleLease lease = SafeHandleLease.Acquire(registration.Handle);
                _backend.Remove(registration.Target);
            }
            catch (ObjectDisposedException)
            {
                // The handle was closed (the kernel dropped it), or the backend was released with the loop.
            }
        }

        _registrations.Free(registration);
    }

    /// <summary>
    /// Delivers one event (the return path, step 2 in docs/articles/concepts.md): finds the registration by token, checks
    /// it is the same live one, filters by interest, calls the callback, and latches a hang-up that would repeat.
    /// </summary>
    private void Dispatch(ulong token, Readiness readiness, SocketError socketError)
    {
        Registration? registration = _registrations.Find(token);
        if (registration is null || registration.IsDisposed)
        {
            System.Threading.Volatile.Write(ref _staleEvents, _staleEvents + 1);
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
        System.Threading.Volatile.Write(ref _eventsDispatched, _eventsDispatched + 1);
        BeginCallback(LoopCallbackKind.Readiness, registration, null);
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
            EndCallback();
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
        lock (registration.Gate)
        {
            if (registration.IsDisposed)
            {
                return;
            }

            registration.HangupLatched = true;
            try
            {
                using SafeHandleLease lease = SafeHandleLease.Acquire(registration.Handle);
                _backend.Modify(registration.Target, registration.Token, registration.Interest, registration.EffectiveMode);
            }
            catch (ObjectDisposedException)
            {
                // Closed meanwhile: the kernel no longer reports it.
            }
        }
    }

    /// <summary>On release: closes the table to new registrations and deregisters every one left (the loop, not each registration's <see cref="Registration.Dispose"/>, so the path stays loop to backend).</summary>
    private void DeregisterAll()
    {
        foreach (Registration? registration in _registrations.Close())
        {
            if (registration is not null)
            {
                Deregister(registration);
            }
        }
    }

    /// <summary>Takes a reference on a handle being registered or changed; a closed one gives an <see cref="ObjectDisposedException"/> naming the socket or the handle, with <paramref name="message"/>.</summary>
    private static SafeHandleLease AcquireHandle(SafeHandle handle, Socket? socket, string message)
    {
        try
        {
            return SafeHandleLease.Acquire(handle);
        }
        catch (ObjectDisposedException)
        {
            throw new ObjectDisposedException(socket is null ? "handle" : "socket", message);
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
}
