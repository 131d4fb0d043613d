using System.Runtime.InteropServices;

namespace EpollSharp;

internal static partial class Interop
{
    /// <summary>
    /// Linux io_uring (<c>&lt;linux/io_uring.h&gt;</c>): the three system calls, reached through <c>syscall(2)</c> because the
    /// C library does not wrap them, the constants the io_uring backend uses, and the records it shares with the kernel.
    /// Every constant and layout here is printed by <c>native/probe/io_uring_probe.c</c> and compared by the tests.
    /// </summary>
    internal static unsafe class IoUring
    {
        // System call numbers: the same on x86-64 and arm64 (and the 32-bit ABIs), from the table shared since Linux 5.1.
        internal const int SYS_io_uring_setup = 425;
        internal const int SYS_io_uring_enter = 426;
        internal const int SYS_io_uring_register = 427;

        // IoUringParams.flags.
        internal const uint IORING_SETUP_CQSIZE = 1u << 3;
        internal const uint IORING_SETUP_CLAMP = 1u << 4;
        internal const uint IORING_SETUP_R_DISABLED = 1u << 6;
        internal const uint IORING_SETUP_SINGLE_ISSUER = 1u << 12;
        internal const uint IORING_SETUP_DEFER_TASKRUN = 1u << 13;

        // IoUringParams.features.
        internal const uint IORING_FEAT_SINGLE_MMAP = 1u << 0;
        internal const uint IORING_FEAT_NODROP = 1u << 1;
        internal const uint IORING_FEAT_EXT_ARG = 1u << 8;
        internal const uint IORING_FEAT_RSRC_TAGS = 1u << 10;

        /// <summary><c>io_uring_getevents_arg.min_wait_usec</c> is honoured (Linux 6.12); not in the 6.1 headers.</summary>
        internal const uint IORING_FEAT_MIN_TIMEOUT = 1u << 15;

        // mmap offsets of the rings and the submission entries.
        internal const long IORING_OFF_SQ_RING = 0;
        internal const long IORING_OFF_CQ_RING = 0x8000000;
        internal const long IORING_OFF_SQES = 0x10000000;

        // io_uring_enter flags.
        internal const uint IORING_ENTER_GETEVENTS = 1u << 0;
        internal const uint IORING_ENTER_EXT_ARG = 1u << 3;

        // Opcodes.
        internal const byte IORING_OP_NOP = 0;
        internal const byte IORING_OP_POLL_ADD = 6;
        internal const byte IORING_OP_POLL_REMOVE = 7;
        internal const byte IORING_OP_SENDMSG = 9;
        internal const byte IORING_OP_TIMEOUT = 11;
        internal const byte IORING_OP_ASYNC_CANCEL = 14;

        /// <summary>Updates entries of the registered file table (<c>sqe-&gt;off</c> the first index, <c>addr</c> the descriptors, <c>len</c> how many).</summary>
        internal const byte IORING_OP_FILES_UPDATE = 20;
        internal const byte IORING_OP_SEND = 26;
        internal const byte IORING_OP_RECV = 27;

        /// <summary>Zero-copy sendmsg (Linux 6.1): not used, only probed as the marker of a kernel with multishot receive (6.0).</summary>
        internal const byte IORING_OP_SENDMSG_ZC = 48;

        // IoUringSqe.flags.
        internal const byte IOSQE_BUFFER_SELECT = 1 << 5;
        internal const byte IOSQE_IO_LINK = 1 << 2;

        /// <summary><c>sqe-&gt;fd</c> is an index of the registered file table, not a descriptor.</summary>
        internal const byte IOSQE_FIXED_FILE = 1 << 0;

        /// <summary>No completion is posted when the request succeeds (Linux 5.17).</summary>
        internal const byte IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

        // IoUringSqe.ioprio of RECV: keep receiving into provided buffers until cancelled or failed.
        internal const ushort IORING_RECV_MULTISHOT = 1 << 1;

        // The CQE's buffer id: flags >> IORING_CQE_BUFFER_SHIFT when IORING_CQE_F_BUFFER is set.
        internal const uint IORING_CQE_F_BUFFER = 1u << 0;
        internal const int IORING_CQE_BUFFER_SHIFT = 16;

        // send(2) flags: no SIGPIPE on a connection the peer reset.
        internal const uint MSG_NOSIGNAL = 0x4000;

        // IoUringSqe.len of POLL_ADD and POLL_REMOVE.
        internal const uint IORING_POLL_ADD_MULTI = 1u << 0;
        internal const uint IORING_POLL_UPDATE_EVENTS = 1u << 1;
        internal const uint IORING_POLL_UPDATE_USER_DATA = 1u << 2;

        // IoUringCqe.flags.
        internal const uint IORING_CQE_F_MORE = 1u << 1;

        /// <summary>
        /// IoUringCqe.flags, incrementally consumed buffer rings (Linux 6.12): the kernel goes on filling the completion's
        /// buffer, which must not be given back yet.
        /// </summary>
        internal const uint IORING_CQE_F_BUF_MORE = 1u << 4;

        // The submission ring's flags word: completions overflowed the ring and wait in the kernel.
        internal const uint IORING_SQ_CQ_OVERFLOW = 1u << 1;

        // io_uring_register opcodes and the probe's flag.
        internal const uint IORING_REGISTER_PROBE = 8;
        internal const uint IORING_REGISTER_ENABLE_RINGS = 12;
        internal const uint IORING_REGISTER_PBUF_RING = 22;
        internal const uint IORING_UNREGISTER_PBUF_RING = 23;

        /// <summary>Unregisters the file table (every entry lets go of its file).</summary>
        internal const uint IORING_UNREGISTER_FILES = 3;

        /// <summary>Registers a file table described by an <see cref="IoUringRsrcRegister"/> (Linux 5.13).</summary>
        internal const uint IORING_REGISTER_FILES2 = 13;

        /// <summary><see cref="IoUringRsrcRegister"/>.Flags: a table of empty entries, no descriptors given (Linux 5.19).</summary>
        internal const uint IORING_RSRC_REGISTER_SPARSE = 1u << 0;

        /// <summary>IoUringBufReg.flags (Linux 6.12): the kernel consumes each buffer incrementally, as bytes arrive, rather than whole.</summary>
        internal const ushort IOU_PBUF_RING_INC = 2;

        internal const ushort IO_URING_OP_SUPPORTED = 1;

        // mmap protection and flags for the rings.
        internal const int PROT_READ = 0x1;
        internal const int PROT_WRITE = 0x2;
        internal const int MAP_SHARED = 0x01;
        internal const int MAP_POPULATE = 0x8000;
        internal const int MAP_PRIVATE = 0x02;
        internal const int MAP_ANONYMOUS = 0x20;

        /// <summary><c>int io_uring_setup(u32 entries, struct io_uring_params *p);</c> Returns the ring descriptor, or -1 with errno set.</summary>
        internal static int io_uring_setup(uint entries, IoUringParams* p) =>
            (int)Sys.syscall(SYS_io_uring_setup, (nint)entries, (nint)p, 0, 0, 0, 0);

        /// <summary><c>int io_uring_enter(unsigned int fd, u32 to_submit, u32 min_complete, u32 flags, const void *arg, size_t argsz);</c> Returns the number of entries submitted, or -1 with errno set.</summary>
        internal static int io_uring_enter(int fd, uint toSubmit, uint minComplete, uint flags, void* arg, nuint argSize) =>
            (int)Sys.syscall(SYS_io_uring_enter, fd, (nint)toSubmit, (nint)minComplete, (nint)flags, (nint)arg, (nint)argSize);

        /// <summary><c>int io_uring_register(unsigned int fd, unsigned int opcode, void *arg, unsigned int nr_args);</c> Returns 0 or a positive value, or -1 with errno set.</summary>
        internal static int io_uring_register(int fd, uint opcode, void* arg, uint nrArgs) =>
            (int)Sys.syscall(SYS_io_uring_register, fd, (nint)opcode, (nint)arg, (nint)nrArgs, 0, 0);
    }

    /// <summary><c>struct io_sqring_offsets</c>: where the submission ring's fields lie in its mapping. 40 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoSqringOffsets
    {
        public uint Head;
        public uint Tail;
        public uint RingMask;
        public uint RingEntries;
        public uint Flags;
        public uint Dropped;
        public uint Array;
        public uint Resv1;
        public ulong UserAddr;
    }

    /// <summary><c>struct io_cqring_offsets</c>: where the completion ring's fields lie in its mapping. 40 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoCqringOffsets
    {
        public uint Head;
        public uint Tail;
        public uint RingMask;
        public uint RingEntries;
        public uint Overflow;
        public uint Cqes;
        public uint Flags;
        public uint Resv1;
        public ulong UserAddr;
    }

    /// <summary><c>struct io_uring_params</c>, filled in by <c>io_uring_setup</c>. 120 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringParams
    {
        public uint SqEntries;
        public uint CqEntries;
        public uint Flags;
        public uint SqThreadCpu;
        public uint SqThreadIdle;
        public uint Features;
        public uint WqFd;
        public uint Resv0;
        public uint Resv1;
        public uint Resv2;
        public IoSqringOffsets SqOff;
        public IoCqringOffsets CqOff;
    }

    /// <summary><c>struct io_uring_sqe</c>: one submission entry, 64 bytes; only the fields the backend writes are named.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    internal struct IoUringSqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(2)] public ushort IoPrio;
        [FieldOffset(4)] public int Fd;
        /// <summary><c>off</c> / <c>addr2</c>: for a poll update, the new user data.</summary>
        [FieldOffset(8)] public ulong Off;
        /// <summary><c>addr</c>: for POLL_REMOVE, the user data of the poll to remove or update.</summary>
        [FieldOffset(16)] public ulong Addr;
        /// <summary><c>len</c>: for POLL_ADD and POLL_REMOVE, the <c>IORING_POLL_*</c> flags.</summary>
        [FieldOffset(24)] public uint Len;
        /// <summary>The opcode's flags word: <c>poll32_events</c> for the poll operations.</summary>
        [FieldOffset(28)] public uint OpFlags;
        [FieldOffset(32)] public ulong UserData;
        [FieldOffset(40)] public ushort BufIndex;
        [FieldOffset(42)] public ushort Personality;
        [FieldOffset(44)] public int SpliceFdIn;
        [FieldOffset(48)] public ulong Addr3;
        [FieldOffset(56)] public ulong Pad2;
    }

    /// <summary><c>struct io_uring_cqe</c>: one completion, 16 bytes (the ring is not set up with 32-byte completions).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringCqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    /// <summary><c>struct msghdr</c> on the 64-bit ABIs (56 bytes): only the iovec fields are used.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct MsgHdr
    {
        public nint Name;
        public uint NameLen;
        public nint Iov;
        public nuint IovLen;
        public nint Control;
        public nuint ControlLen;
        public int Flags;
    }

    /// <summary><c>struct iovec</c> (16 bytes on the 64-bit ABIs).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoVec
    {
        public nint Base;
        public nuint Len;
    }

    /// <summary><c>struct io_uring_buf_reg</c>: registers a provided buffer ring (<c>IORING_REGISTER_PBUF_RING</c>). 40 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringBufReg
    {
        public ulong RingAddr;
        public uint RingEntries;
        public ushort Bgid;
        public ushort Flags;
        public ulong Resv0;
        public ulong Resv1;
        public ulong Resv2;
    }

    /// <summary><c>struct io_uring_rsrc_register</c>: a resource table to register (<c>IORING_REGISTER_FILES2</c>). 32 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringRsrcRegister
    {
        public uint Nr;
        public uint Flags;
        public ulong Resv2;

        /// <summary>The descriptors (<c>__s32</c> each, -1 for an empty entry); 0 with <c>IORING_RSRC_REGISTER_SPARSE</c>.</summary>
        public ulong Data;
        public ulong Tags;
    }

    /// <summary><c>struct io_uring_buf</c>: one entry of a provided buffer ring, 16 bytes; the ring's tail is the first entry's last 16 bits.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringBuf
    {
        public ulong Addr;
        public uint Len;
        public ushort Bid;
        public ushort Resv;
    }

    /// <summary><c>struct io_uring_getevents_arg</c>, passed with <c>IORING_ENTER_EXT_ARG</c>. 24 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringGeteventsArg
    {
        public ulong Sigmask;
        public uint SigmaskSz;
        /// <summary><c>min_wait_usec</c> (<c>pad</c> before Linux 6.12): see <c>IORING_FEAT_MIN_TIMEOUT</c>.</summary>
        public uint MinWaitUsec;
        /// <summary>A pointer to a <see cref="KernelTimespec"/>; 0 waits without limit.</summary>
        public ulong Ts;
    }

    /// <summary><c>struct __kernel_timespec</c>: 64-bit seconds and nanoseconds on every ABI. 16 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct KernelTimespec
    {
        public long TvSec;
        public long TvNsec;
    }

    /// <summary><c>struct io_uring_probe</c>'s header (16 bytes); <see cref="IoUringProbeOp"/> records follow it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringProbeHeader
    {
        public byte LastOp;
        public byte OpsLen;
        public ushort Resv;
        public uint Resv2a;
        public uint Resv2b;
        public uint Resv2c;
    }

    /// <summary><c>struct io_uring_probe_op</c>: one opcode and whether the kernel supports it. 8 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoUringProbeOp
    {
        public byte Op;
        public byte Resv;
        public ushort Flags;
        public uint Resv2;
    }
}
