using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using EpollSharp.Native;
using Microsoft.Win32.SafeHandles;
using K = EpollSharp.Interop.Kqueue;

namespace EpollSharp.Backends;

/// <summary>
/// The BSD backend: one kqueue, read and write as two filters (<c>EVFILT_READ</c>, <c>EVFILT_WRITE</c>) per
/// descriptor, and an <c>EVFILT_USER</c> event for wake-ups. Runs on macOS, FreeBSD 12+ and Linux over libkqueue; the
/// <see cref="KqueueAbi"/> of the loaded library decides the layout of <c>struct kevent</c>.
/// </summary>
/// <remarks>
/// <para><b>Modes.</b> Level: plain filters. Edge: <c>EV_CLEAR</c>. One-shot: <c>EV_ONESHOT</c>; as there are two
/// filters, the first event of a one-shot registration deletes the other filter too (in <see cref="Wait"/>), so a
/// one-shot registration interested in both reports once, as with epoll, until <see cref="Modify"/> re-arms it. A
/// re-arm that races, on another thread, with the delivery of the previous arm's event may be disarmed by it: re-arm
/// from the callback or after it.</para>
/// <para><b>Empty interest.</b> kqueue reports a hang-up only on a filter, so an empty interest (in every mode) is
/// watched with an edge-triggered read filter: a hang-up or error is reported once per change, and data that arrives
/// wakes the wait once per arrival (the loop filters it out; it never calls back).</para>
/// <para><b>Changes.</b> <see cref="Modify"/> deletes the filters, then adds the wanted ones: re-adding an existing
/// filter to change its flags, and <c>EV_RECEIPT</c>, are not relied on (libkqueue mishandles both). Deleting a filter
/// that is not there (a one-shot filter that fired) gives ENOENT, which is ignored. The backend keeps a table of the
/// watched descriptors, because kqueue cannot say whether a descriptor is registered: it rejects a second registration,
/// and it recognises an entry left behind by a descriptor closed without <see cref="Remove"/> (its handle is closed) and
/// deletes that entry's filters before watching the descriptor that reuses the number (libkqueue, unlike the kernels,
/// keeps filters of closed descriptors).</para>
/// <para><b>Readiness</b> (see <see cref="ToReadiness"/>): a read event is <see cref="Readiness.Readable"/>; with
/// <c>EV_EOF</c> also <see cref="Readiness.ReadClosed"/>; and with an error in <c>fflags</c> also
/// <see cref="Readiness.Error"/> and <see cref="Readiness.Closed"/>. A write event is <see cref="Readiness.Writable"/>;
/// with <c>EV_EOF</c> also <see cref="Readiness.Readable"/> (a read then returns the end or the error), and with an
/// error also <see cref="Readiness.Error"/> and <see cref="Readiness.Closed"/>. Both events of one descriptor in one
/// wait are merged into one. The error itself (the errno in <c>fflags</c>) is reported in
/// <see cref="BackendEvent.SocketError"/>.</para>
/// <para>The token is the event's <c>udata</c> (pointer-sized: 64 bits, so only 64-bit processes are supported).
/// <see cref="Wait"/> allocates nothing: the event list is preallocated, and so is the table that merges events.</para>
/// </remarks>
internal sealed unsafe class KqueueBackend : IPollBackend
{
    /// <summary>The ident of the waker's EVFILT_USER event (user events have their own ident space).</summary>
    private const nuint WakeIdent = 1;

    /// <summary>The largest change list this backend passes (an add of both filters).</summary>
    private const int MaxChanges = 2;

    private readonly SafeFileHandle _kq;
    private readonly KqueueAbi _abi;
    private readonly byte[] _eventList;
    private readonly int _capacity;
    private readonly object _lock = new();
    private readonly Dictionary<int, Entry> _entries = new();

    /// <summary>How many entries have <c>EV_ONESHOT</c> filters: while none has, <see cref="Wait"/> never takes the lock.</summary>
    private int _oneShotEntries;

    // Merging the read and write events of one token within one wait: an open-addressing table indexed by token,
    // valid where _mergeStamp equals the current _batch, so it never needs clearing.
    private readonly int[] _mergeStamp;
    private readonly int[] _mergeIndex;
    private readonly int _mergeMask;
    private int _batch;

    public KqueueBackend(int maxEvents)
    {
        KqueueLibrary.ThrowIfUnavailable();
        _abi = KqueueAbi.For(KqueueLibrary.Flavor);
        int fd = K.kqueue();
        if (fd < 0)
        {
            throw KqueueErrors.Create("kqueue()", Interop.Errno.Last());
        }

        // The runtime's own close(2) releases it: the C library's close is not bound under a name that works on every OS.
        _kq = new SafeFileHandle(new IntPtr(fd), ownsHandle: true);
        try
        {
            int errno = Control(WakeIdent, _abi.EvfiltUser, K.EV_ADD | K.EV_CLEAR, 0, 0);
            if (errno != 0)
            {
                throw KqueueErrors.Create("kevent (add the EVFILT_USER waker)", errno);
            }
        }
        catch
        {
            _kq.Dispose();
            throw;
        }

        _capacity = maxEvents;
        _eventList = new byte[maxEvents * _abi.EventSize];
        int size = 1;
        while (size < maxEvents * 2)
        {
            size <<= 1;
        }

        _mergeStamp = new int[size];
        _mergeIndex = new int[size];
        _mergeMask = size - 1;
    }

    public EventLoopBackend Kind => EventLoopBackend.Kqueue;

    /// <summary>The flavour in use (for tests and diagnostics).</summary>
    internal KqueueFlavor Flavor => _abi.Flavor;

    public void Add(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        int fd = target.FileDescriptor;
        using SafeHandleLease lease = SafeHandleLease.Acquire(_kq);
        lock (_lock)
        {
            if (_entries.TryGetValue(fd, out Entry? existing))
            {
                if (!existing.Handle.IsClosed)
                {
                    throw new ArgumentException(
                        "The handle is already registered with this event loop; change the existing registration's interest instead.", "handle");
                }

                // The descriptor was closed without Remove and its number now names this handle. The kernels forgot
                // its filters at close; libkqueue did not, and would take the add below for a change of them.
                DeleteFilters(fd, existing, except: 0);
                Forget(fd, existing);
            }

            var entry = new Entry(target.Handle);
            Apply(fd, entry, token, interest, mode, "register");
            _entries.Add(fd, entry);
        }
    }

    public void Modify(BackendTarget target, ulong token, Interest interest, TriggerMode mode)
    {
        int fd = target.FileDescriptor;
        using SafeHandleLease lease = SafeHandleLease.Acquire(_kq);
        lock (_lock)
        {
            if (!_entries.TryGetValue(fd, out Entry? entry))
            {
                entry = new Entry(target.Handle);
                _entries.Add(fd, entry);
            }

            DeleteFilters(fd, entry, except: 0);
            try
            {
                Apply(fd, entry, token, interest, mode, "change");
            }
            catch
            {
                // Nothing is watched now; keep no entry that claims otherwise.
                Forget(fd, entry);
                throw;
            }
        }
    }

    public void Remove(BackendTarget target)
    {
        int fd = target.FileDescriptor;
        using SafeHandleLease lease = SafeHandleLease.Acquire(_kq);
        lock (_lock)
        {
            if (_entries.TryGetValue(fd, out Entry? entry))
            {
                // Errors other than ENOENT/EBADF cannot happen for a delete of an open descriptor; either way the
                // descriptor is no longer watched, which is what was asked.
                DeleteFilters(fd, entry, except: 0);
                Forget(fd, entry);
            }
        }
    }

    public int Wait(Span<BackendEvent> events, int timeoutMilliseconds)
    {
        int capacity = Math.Min(events.Length, _capacity);
        if (capacity <= 0)
        {
            return 0;
        }

        using SafeHandleLease lease = SafeHandleLease.Acquire(_kq);
        int kq = (int)_kq.DangerousGetHandle();
        long start = timeoutMilliseconds > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMilliseconds;
        K.Timespec ts;
        fixed (byte* list = _eventList)
        {
            int n;
            while (true)
            {
                K.Timespec* timeout = null;
                if (remaining >= 0)
                {
                    ts.tv_sec = remaining / 1000;
                    ts.tv_nsec = (remaining % 1000) * 1_000_000;
                    timeout = &ts;
                }

                n = K.kevent(kq, null, 0, list, capacity, timeout);
                if (n >= 0)
                {
                    break;
                }

                int errno = Interop.Errno.Last();
                if (errno != Interop.Errno.EINTR)
                {
                    throw KqueueErrors.Create("kevent (wait)", errno);
                }

                if (timeoutMilliseconds > 0)
                {
                    remaining = Timeouts.Remaining(start, timeoutMilliseconds);
                    if (remaining == 0)
                    {
                        return 0;
                    }
                }
            }

            return Translate(list, n, events);
        }
    }

    public void Wake()
    {
        using SafeHandleLease lease = SafeHandleLease.Acquire(_kq);
        int errno = Control(WakeIdent, _abi.EvfiltUser, 0, K.NOTE_TRIGGER, 0);
        if (errno != 0)
        {
            throw KqueueErrors.Create("kevent (trigger the EVFILT_USER waker)", errno);
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _entries.Clear();
            _oneShotEntries = 0;
        }

        _kq.Dispose();
    }

    /// <summary>What one event means. <paramref name="fflags"/> carries the socket error with <c>EV_EOF</c>.</summary>
    internal static Readiness ToReadiness(short filter, ushort flags, uint fflags)
    {
        Readiness r;
        if (filter == K.EVFILT_READ)
        {
            r = Readiness.Readable;
            if ((flags & K.EV_EOF) != 0)
            {
                r |= Readiness.ReadClosed;
            }
        }
        else if (filter == K.EVFILT_WRITE)
        {
            r = Readiness.Writable;
            if ((flags & K.EV_EOF) != 0)
            {
                // The sending side is shut: the connection is reset, or was shut down. A read returns the end or the error.
                r |= Readiness.Readable;
            }
        }
        else
        {
            return Readiness.None;
        }

        if (((flags & K.EV_EOF) != 0 && fflags != 0) || (flags & K.EV_ERROR) != 0)
        {
            r |= Readiness.Error | Readiness.Closed;
        }

        return r;
    }

    /// <summary>
    /// The socket error a read or write event carries: with <c>EV_EOF</c>, <c>fflags</c> is the socket's pending error
    /// (0 for an orderly end), an errno of the system the library runs on (Linux's for libkqueue). Reading
    /// <c>SO_ERROR</c> later is no substitute: libkqueue reads it to fill in <c>fflags</c>, which clears it. An
    /// <c>EV_ERROR</c> event carries a failed change's errno in <c>data</c> instead, which is no socket error.
    /// </summary>
    private SocketError SocketErrorOf(short filter, ushort flags, uint fflags)
    {
        if ((filter != K.EVFILT_READ && filter != K.EVFILT_WRITE) || (flags & K.EV_EOF) == 0 || fflags == 0)
        {
            return SocketError.Success;
        }

        return ToSocketError(_abi.Flavor, (int)fflags);
    }

    /// <summary>An errno from <c>fflags</c> as a <see cref="SocketError"/>, read with the errno values of <paramref name="flavor"/>.</summary>
    internal static SocketError ToSocketError(KqueueFlavor flavor, int errno) =>
        flavor == KqueueFlavor.LibKqueue ? SocketErrors.FromLinuxErrno(errno) : SocketErrors.FromBsdErrno(errno);

    /// <summary>Turns <paramref name="n"/> kevents into backend events: drops the wake-up, merges per token, disarms one-shots.</summary>
    private int Translate(byte* list, int n, Span<BackendEvent> events)
    {
        int batch = unchecked(++_batch);
        if (batch == 0)
        {
            // The stamps wrapped: forget them all once, so that a stale stamp can never equal a new batch.
            Array.Clear(_mergeStamp, 0, _mergeStamp.Length);
            batch = _batch = 1;
        }

        int written = 0;
        for (int i = 0; i < n; i++)
        {
            KeventFields ev = _abi.Read(list, i);
            if (ev.Filter == _abi.EvfiltUser)
            {
                continue; // the waker; EV_CLEAR re-armed it
            }

            Readiness readiness = ToReadiness(ev.Filter, ev.Flags, ev.Fflags);
            if (readiness == Readiness.None)
            {
                continue;
            }

            ulong token = (ulong)(long)ev.Udata;
            int slot = (int)(uint)token & _mergeMask;
            while (_mergeStamp[slot] == batch && events[_mergeIndex[slot]].Token != token)
            {
                slot = (slot + 1) & _mergeMask;
            }

            SocketError error = SocketErrorOf(ev.Filter, ev.Flags, ev.Fflags);
            if (_mergeStamp[slot] == batch)
            {
                ref BackendEvent merged = ref events[_mergeIndex[slot]];
                merged.Readiness |= readiness;
                if (merged.SocketError == SocketError.Success)
                {
                    merged.SocketError = error;
                }

                continue;
            }

            // Returned events carry EV_ONESHOT on every flavour known, but kevent(2) does not promise it: the count decides too.
            if (((ev.Flags & K.EV_ONESHOT) != 0 || Volatile.Read(ref _oneShotEntries) != 0) && !Disarm((int)ev.Ident, token, ev.Filter))
            {
                continue;
            }

            _mergeStamp[slot] = batch;
            _mergeIndex[slot] = written;
            events[written].Token = token;
            events[written].Readiness = readiness;
            events[written].SocketError = error;
            written++;
        }

        return written;
    }

    /// <summary>
    /// A one-shot filter fired (and the kernel deleted it): delete the registration's other filter, so that the
    /// registration reports once until re-armed. Returns false for an event of an arm that already reported.
    /// </summary>
    private bool Disarm(int fd, ulong token, short firedFilter)
    {
        lock (_lock)
        {
            if (!_entries.TryGetValue(fd, out Entry? entry) || entry.Token != token || !entry.OneShot)
            {
                return true; // not ours to judge: the loop drops events of disposed registrations by token
            }

            if (!entry.Armed)
            {
                return false;
            }

            entry.Armed = false;
            DeleteFilters(fd, entry, except: firedFilter);
            if (firedFilter == K.EVFILT_READ)
            {
                entry.ReadAdded = false;
            }
            else if (firedFilter == K.EVFILT_WRITE)
            {
                entry.WriteAdded = false;
            }

            return true;
        }
    }

    /// <summary>Adds the filters for (<paramref name="interest"/>, <paramref name="mode"/>) and records them in <paramref name="entry"/>.</summary>
    private void Apply(int fd, Entry entry, ulong token, Interest interest, TriggerMode mode, string what)
    {
        ushort flags = K.EV_ADD;
        flags |= mode switch
        {
            TriggerMode.Edge => K.EV_CLEAR,
            TriggerMode.OneShot => K.EV_ONESHOT,
            _ => (ushort)0,
        };

        bool read = (interest & Interest.Readable) != 0;
        bool write = (interest & Interest.Writable) != 0;
        if (!read && !write)
        {
            // Only hang-ups and errors: an edge-triggered read filter reports them once, and data without a spin.
            read = true;
            flags = K.EV_ADD | K.EV_CLEAR;
        }

        nint udata = (nint)(long)token;
        byte* changes = stackalloc byte[MaxChanges * _abi.EventSize];
        int count = 0;
        if (read)
        {
            _abi.Write(changes, (nuint)fd, K.EVFILT_READ, flags, 0, udata);
            count++;
        }

        if (write)
        {
            _abi.Write(changes + (count * _abi.EventSize), (nuint)fd, K.EVFILT_WRITE, flags, 0, udata);
            count++;
        }

        int errno = Control(changes, count);
        if (errno != 0)
        {
            // Without an event list kevent stops at the first failing change: undo whatever was added.
            entry.ReadAdded = read;
            entry.WriteAdded = write;
            DeleteFilters(fd, entry, except: 0);
            throw Translate(what, fd, errno);
        }

        entry.Token = token;
        entry.ReadAdded = read;
        entry.WriteAdded = write;
        entry.Armed = true;
        SetOneShot(entry, (flags & K.EV_ONESHOT) != 0);
    }

    /// <summary>Removes <paramref name="entry"/> from the table. Under the lock.</summary>
    private void Forget(int fd, Entry entry)
    {
        SetOneShot(entry, false);
        _entries.Remove(fd);
    }

    /// <summary>Records whether <paramref name="entry"/> has EV_ONESHOT filters, keeping the count. Under the lock.</summary>
    private void SetOneShot(Entry entry, bool oneShot)
    {
        if (entry.OneShot != oneShot)
        {
            entry.OneShot = oneShot;
            Volatile.Write(ref _oneShotEntries, _oneShotEntries + (oneShot ? 1 : -1));
        }
    }

    /// <summary>Deletes the filters <paramref name="entry"/> added (but not <paramref name="except"/>), one call each, ignoring ENOENT and EBADF.</summary>
    private void DeleteFilters(int fd, Entry entry, short except)
    {
        if (entry.ReadAdded && except != K.EVFILT_READ)
        {
            Control((nuint)fd, K.EVFILT_READ, K.EV_DELETE, 0, 0);
            entry.ReadAdded = false;
        }

        if (entry.WriteAdded && except != K.EVFILT_WRITE)
        {
            Control((nuint)fd, K.EVFILT_WRITE, K.EV_DELETE, 0, 0);
            entry.WriteAdded = false;
        }
    }

    /// <summary>Applies one change; returns 0 or the errno (EINTR retried). The caller holds a reference on the kqueue.</summary>
    private int Control(nuint ident, short filter, ushort flags, uint fflags, nint udata)
    {
        byte* change = stackalloc byte[_abi.EventSize];
        _abi.Write(change, ident, filter, flags, fflags, udata);
        return Control(change, 1);
    }

    private int Control(byte* changes, int count)
    {
        int kq = (int)_kq.DangerousGetHandle();
        while (true)
        {
            if (K.kevent(kq, changes, count, null, 0, null) >= 0)
            {
                return 0;
            }

            int errno = Interop.Errno.Last();
            if (errno != Interop.Errno.EINTR)
            {
                return errno;
            }
        }
    }

    private static Exception Translate(string what, int fd, int errno)
    {
        return errno switch
        {
            Interop.Errno.EBADF => new ArgumentException("The handle's descriptor is not open.", "handle"),
            Interop.Errno.EINVAL => new ArgumentException("The handle does not support kqueue's read and write filters.", "handle"),
            _ => KqueueErrors.Create("kevent (" + what + " fd " + fd.ToString(CultureInfo.InvariantCulture) + ")", errno),
        };
    }

    /// <summary>What the backend added for one descriptor.</summary>
    private sealed class Entry
    {
        public Entry(SafeHandle handle) => Handle = handle;

        /// <summary>The registered handle; closed means the entry was left behind by a close without Remove.</summary>
        public SafeHandle Handle { get; }

        public ulong Token { get; set; }

        /// <summary>Its filters were added with EV_ONESHOT (not so for an empty interest, watched with EV_CLEAR in every mode).</summary>
        public bool OneShot { get; set; }

        public bool ReadAdded { get; set; }

        public bool WriteAdded { get; set; }

        /// <summary>One-shot only: no event of this arm was reported yet.</summary>
        public bool Armed { get; set; }
    }
}
