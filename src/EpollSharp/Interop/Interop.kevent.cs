using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    internal static partial class Kqueue
    {
        // Filters, actions and flags with the same value on macOS, FreeBSD and libkqueue. The values that differ
        // (EVFILT_USER, the timer units) are in Darwin, FreeBsd and LibKqueue below.
        internal const short EVFILT_READ = -1;
        internal const short EVFILT_WRITE = -2;
        internal const short EVFILT_TIMER = -7;

        internal const ushort EV_ADD = 0x0001;
        internal const ushort EV_DELETE = 0x0002;
        internal const ushort EV_ENABLE = 0x0004;
        internal const ushort EV_DISABLE = 0x0008;
        internal const ushort EV_ONESHOT = 0x0010;
        internal const ushort EV_CLEAR = 0x0020;
        internal const ushort EV_RECEIPT = 0x0040;
        internal const ushort EV_DISPATCH = 0x0080;
        internal const ushort EV_ERROR = 0x4000;
        internal const ushort EV_EOF = 0x8000;

        /// <summary>EVFILT_USER input: trigger the event.</summary>
        internal const uint NOTE_TRIGGER = 0x01000000;

        /// <summary>
        /// <c>int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents,
        /// const struct timespec *timeout);</c> The lists point at arrays of <see cref="KeventDarwin"/> or
        /// <see cref="KeventFreeBsd"/>, whichever the flavour in use has; <paramref name="timeout"/> null waits without limit.
        /// </summary>
#if NET7_0_OR_GREATER
        [LibraryImport(Libraries.Kqueue, EntryPoint = "kevent", SetLastError = true)]
        internal static unsafe partial int kevent(int kq, void* changelist, int nchanges, void* eventlist, int nevents, Timespec* timeout);
#else
        [DllImport(Libraries.Kqueue, EntryPoint = "kevent", SetLastError = true)]
        internal static extern unsafe int kevent(int kq, void* changelist, int nchanges, void* eventlist, int nevents, Timespec* timeout);
#endif

        /// <summary><c>struct timespec</c>: <c>time_t</c> and <c>long</c>, both pointer-sized on the 64-bit systems the backend supports.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct Timespec
        {
            public nint tv_sec;
            public nint tv_nsec;
        }

        /// <summary>
        /// <c>struct kevent</c> on macOS, and in libkqueue's <c>sys/event.h</c>: 32 bytes on 64-bit
        /// (ident 0, filter 8, flags 10, fflags 12, data 16, udata 24).
        /// </summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct KeventDarwin
        {
            public nuint ident;
            public short filter;
            public ushort flags;
            public uint fflags;
            public nint data;
            public nint udata;
        }

        /// <summary>
        /// <c>struct kevent</c> on FreeBSD 12 and later (<c>kevent@FBSD_1.5</c>): 64 bytes on 64-bit, with a 64-bit
        /// <c>data</c> and <c>uint64_t ext[4]</c> at 32, which must be zero in a change.
        /// </summary>
        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct KeventFreeBsd
        {
            public nuint ident;
            public short filter;
            public ushort flags;
            public uint fflags;
            public long data;
            public nint udata;
            public fixed ulong ext[4];
        }

        /// <summary>Values of the macOS headers that differ between flavours.</summary>
        internal static class Darwin
        {
            internal const short EVFILT_USER = -10;
            internal const uint NOTE_SECONDS = 0x1;
            internal const uint NOTE_USECONDS = 0x2;
            internal const uint NOTE_NSECONDS = 0x4;
            internal const uint NOTE_ABSOLUTE = 0x8;
        }

        /// <summary>Values of the FreeBSD (12 and later) headers that differ between flavours.</summary>
        internal static class FreeBsd
        {
            internal const short EVFILT_USER = -11;
            internal const uint NOTE_SECONDS = 0x1;
            internal const uint NOTE_MSECONDS = 0x2;
            internal const uint NOTE_USECONDS = 0x4;
            internal const uint NOTE_NSECONDS = 0x8;
            internal const uint NOTE_ABSTIME = 0x10;
        }

        /// <summary>Values of libkqueue's <c>sys/event.h</c> (Linux) that differ between flavours.</summary>
        internal static class LibKqueue
        {
            internal const short EVFILT_USER = -11;
            internal const uint NOTE_SECONDS = 0x1;
            internal const uint NOTE_USECONDS = 0x2;
            internal const uint NOTE_NSECONDS = 0x4;
            internal const uint NOTE_ABSOLUTE = 0x8;
        }
    }
}
