using System;
using System.Runtime.InteropServices;
using System.Threading;
using EpollSharp.Native;

namespace EpollSharp.Backends;

/// <summary>
/// The completion side of the io_uring backend (<see cref="ICompletionIo"/>): multishot receives into a provided buffer
/// ring, sends as submitted operations, cancellation. Its operations go to the kernel with the loop's next
/// <c>io_uring_enter</c> (the wait), so a receive or a send costs no system call of its own.
/// </summary>
/// <remarks>
/// <para>The buffer ring: one anonymous mapping, registered with <c>IORING_REGISTER_PBUF_RING</c> as group 0. Where the
/// kernel consumes buffers incrementally (<c>IOU_PBUF_RING_INC</c>, Linux 6.12, probed by registering with it), it holds
/// <see cref="LargeBufferCount"/> buffers of <see cref="LargeBufferSize"/> bytes: each receive takes only the bytes that
/// arrived from the buffer at the ring's head, the next receive (of any stream) goes on in the same buffer, and the
/// completion says whether the kernel goes on in it (<c>IORING_CQE_F_BUF_MORE</c>). A 16 KiB message is then one
/// completion and one span, and a 64-byte one takes 64 bytes of a buffer. Elsewhere, <see cref="BufferCount"/> buffers
/// of <see cref="BufferSize"/> bytes, each receive taking a whole buffer. The kernel takes buffer space only when data
/// arrives; the completion names the buffer (<c>IORING_CQE_F_BUFFER</c>), and it goes back to the ring once the kernel
/// is done with it and no completion or kept piece refers to it (counted per buffer): as soon as the sink's call
/// returned, unless the sink kept the bytes. An idle stream therefore holds no buffer.</para>
/// <para>User data: bit 63 marks a completion-side operation, bits 59-62 its kind, bits 32-58 the channel's slot, the
/// low 32 bits the slot's generation. A channel's slot is freed only after the final completion of each of its
/// operations was reaped, and a completion whose generation is not the slot's current one gives its buffer back and is
/// dropped, so a completion never reaches a stream other than its own, whatever descriptor numbers the kernel reuses.</para>
/// </remarks>
internal sealed unsafe partial class IoUringBackend
{
    /// <summary>Each provided receive buffer's size.</summary>
    internal const int BufferSize = 4096;

    /// <summary>How many provided receive buffers the ring has (a power of two, at most 32,768).</summary>
    internal const int BufferCount = 2048;

    /// <summary>Each provided receive buffer's size where the kernel consumes them incrementally (the same mapping as the 4 KiB layout).</summary>
    internal const int LargeBufferSize = 64 * 1024;

    /// <summary>How many provided receive buffers the ring has where the kernel consumes them incrementally.</summary>
    internal const int LargeBufferCount = BufferCount * BufferSize / LargeBufferSize;

    /// <summary>
    /// Whether a new backend asks the kernel for incremental buffer consumption (tests turn it off to exercise the 4 KiB
    /// layout of older kernels); <c>EPOLLSHARP_IO_URING_INCREMENTAL=0</c> (<c>false</c>, <c>off</c>) turns it off for the process.
    /// </summary>
    internal static bool IncrementalBuffersWanted { get; set; } = ParseSwitch(Environment.GetEnvironmentVariable("EPOLLSHARP_IO_URING_INCREMENTAL")) ?? true;

    private const ulong CompletionTag = 1UL << 63;
    private const int KindShift = 59;
    private const ulong KindReceive = 1;
    private const ulong KindSend = 2;
    private const ulong KindCancel = 3;
    private const ushort BufferGroup = 0;

    /// <summary>
    /// The most bytes one armed multishot receive takes before it ends (<c>sqe-&gt;optlen</c>, Linux 6.16 and later); the
    /// stream arms it again while it reads on. A multishot receive drains the socket as data arrives, whatever the stream
    /// does with it: without a cap, a stream that paused (its cancel not yet reached the kernel) would be handed the
    /// whole socket buffer, megabytes held in memory. With the cap it holds at most this much.
    /// </summary>
    internal const int ReceiveArmBytes = 64 * 1024;

    /// <summary>Whether the kernel takes <see cref="ReceiveArmBytes"/> (cleared when a capped receive failed with EINVAL).</summary>
    private bool _receiveCap = true;

    private static readonly string? s_completionsSwitch = Environment.GetEnvironmentVariable("EPOLLSHARP_IO_URING_COMPLETIONS");

    private CompletionChannel?[] _channels = new CompletionChannel?[64];
    private uint[] _channelGenerations = new uint[64];
    private int[] _freeChannels = new int[64];
    private int _freeChannelCount;
    private int _channelsUsed;

    /// <summary>Operations of channels whose final completion was not yet reaped (for <see cref="Dispose"/>).</summary>
    private int _channelOps;

    /// <summary>Reaped receive completions, in the order the kernel posted them.</summary>
    private PendingCompletion[] _pending = new PendingCompletion[256];
    private int _pendingReceives;

    /// <summary>Reaped send completions: dispatched before the receives of the same wait (see <see cref="DispatchCompletion"/>).</summary>
    private PendingCompletion[] _pendingSends = new PendingCompletion[256];
    private int _pendingSendCount;

    /// <summary>Both, for the wait's return test.</summary>
    private int _pendingCount;

    /// <summary>The channels that asked for <see cref="ICompletionSink.OnSendReady"/> this iteration.</summary>
    private CompletionChannel?[] _deferredSends = new CompletionChannel?[64];
    private int _deferredSendCount;

    private bool _completions;
    private string _completionsReason = "not set up";
    private nint _bufferRegion;
    private nuint _bufferRegionLength;
    private Interop.IoUringBuf* _bufferRing;
    private byte* _bufferBase;
    private ushort _bufferTail;
    private int _buffersOut;

    /// <summary>Whether the ring consumes buffers incrementally (<c>IOU_PBUF_RING_INC</c>): the large layout.</summary>
    private bool _incremental;

    /// <summary>The layout in use: <see cref="BufferSize"/> and <see cref="BufferCount"/>, or the large, incremental one.</summary>
    private int _bufferSize = BufferSize;

    private int _bufferCount = BufferCount;

    /// <summary>Which buffers the kernel handed out and were not given back (to rebuild the ring when it moves).</summary>
    private readonly bool[] _bufferIsOut = new bool[BufferCount];

    /// <summary>Per buffer: reaped completions not yet dispatched, and pieces sinks kept, that refer to it.</summary>
    private readonly int[] _bufferRefs = new int[BufferCount];

    /// <summary>Per buffer: pieces sinks kept (part of <see cref="_bufferRefs"/>).</summary>
    private readonly int[] _bufferKeptRefs = new int[BufferCount];

    /// <summary>Incremental layout, per buffer: bytes the kernel filled (where the next completion's bytes start).</summary>
    private readonly int[] _bufferFilled = new int[BufferCount];

    /// <summary>Incremental layout, per buffer: the kernel goes on filling it (its last completion had <c>IORING_CQE_F_BUF_MORE</c>).</summary>
    private readonly bool[] _bufferKernelHolds = new bool[BufferCount];

    /// <summary>Buffers a reaped completion or a kept piece refers to (<see cref="_bufferRefs"/> not 0).</summary>
    private int _buffersReferenced;

    /// <summary>Buffers with pieces sinks kept (held data) and have not given back: at a quarter of the ring, sinks copy instead.</summary>
    private int _buffersKept;

    /// <summary>
    /// Receives armed after their last one ended with <c>ENOBUFS</c> while the ring is still empty: armed there, they
    /// would end at once (the socket has data, the ring none) and again, as fast as the loop turns. They wait here
    /// (<see cref="CompletionChannel.ReceiveParked"/>) until a buffer goes back to the ring (<see cref="GiveBack"/>).
    /// </summary>
    private CompletionChannel?[] _parked = new CompletionChannel?[4];

    private int _parkedCount;

    /// <summary>Parked receives cancelled or closed: their final completion (<c>ECANCELED</c>) is reported by the next reap.</summary>
    private CompletionChannel?[] _parkedEnds = new CompletionChannel?[4];

    private int _parkedEndCount;

    /// <summary>Buffers a test took out of the ring (<see cref="WithholdReceiveBuffers"/>).</summary>
    private ushort[]? _withheld;

    /// <summary>Whether the completion path is set up (the kernel has what it needs, and it was not switched off); why not otherwise.</summary>
    internal bool CompletionsAvailable(out string reason)
    {
        reason = _completionsReason;
        return _completions;
    }

    /// <inheritdoc/>
    public bool Enabled => _completions;

    /// <inheritdoc/>
    public int ReceiveBufferSize => _bufferSize;

    /// <inheritdoc/>
    public int ReceiveBuffersInUse => Volatile.Read(ref _buffersReferenced);

    /// <summary>Buffers out of the ring: <see cref="ReceiveBuffersInUse"/>, and the one the kernel is filling incrementally (if any).</summary>
    internal int ReceiveBuffersOut => Volatile.Read(ref _buffersOut);

    /// <summary>Buffers out of the ring because pieces sinks kept (held data) refer to them (tests check the bound).</summary>
    internal int ReceiveBuffersKept => _buffersKept;

    /// <inheritdoc/>
    public int PendingCompletions => _pendingCount;

    /// <inheritdoc/>
    public bool ReceiveBuffersScarce => _buffersKept >= _bufferCount / 4;

    /// <summary>Whether the ring consumes large buffers incrementally (<c>IOU_PBUF_RING_INC</c>, Linux 6.12 and later).</summary>
    internal bool IncrementalBuffers => _incremental;

    /// <inheritdoc/>
    public ReadOnlySpan<byte> ReceiveBuffer(ushort bufferId) =>
        _completions ? new ReadOnlySpan<byte>(_bufferBase + ((long)bufferId * _bufferSize), _bufferSize) : default;

    /// <inheritdoc/>
    public void ReleaseReceiveBuffer(ushort bufferId)
    {
        if (--_bufferKeptRefs[bufferId] == 0)
        {
            _buffersKept--;
        }

        Unref(bufferId);
    }

    /// <inheritdoc/>
    public void KeepReceiveBuffer(ushort bufferId)
    {
        if (_bufferRefs[bufferId]++ == 0)
        {
            _buffersReferenced++;
        }

        if (_bufferKeptRefs[bufferId]++ == 0)
        {
            _buffersKept++;
        }
    }

    /// <inheritdoc/>
    public bool ReceivePending(CompletionChannel channel)
    {
        for (int i = 0; i < _pendingReceives; i++)
        {
            if (_pending[i].Channel == channel)
            {
                return true;
            }
        }

        lock (_lock)
        {
            for (int i = 0; i < _parkedEndCount; i++)
            {
                if (_parkedEnds[i] == channel)
                {
                    return true;
                }
            }

            ulong userData = OpUserData(KindReceive, channel);
            uint tail = _ring.CqTail;
            for (uint head = _ring.CqHead; head != tail; head++)
            {
                if (_ring.Cqe(head).UserData == userData)
                {
                    return true;
                }
            }

            return _ring.CqOverflowed;
        }
    }

    /// <inheritdoc/>
    public void DeferSend(CompletionChannel channel)
    {
        if (_deferredSendCount == _deferredSends.Length)
        {
            Array.Resize(ref _deferredSends, _deferredSends.Length * 2);
        }

        _deferredSends[_deferredSendCount++] = channel;
    }

    /// <inheritdoc/>
    public void RunDeferredSends()
    {
        // A sink may defer again (it cannot while its send is in flight, so this ends).
        for (int i = 0; i < _deferredSendCount; i++)
        {
            CompletionChannel channel = _deferredSends[i]!;
            _deferredSends[i] = null;
            channel.Sink.OnSendReady();
        }

        _deferredSendCount = 0;
    }

    /// <summary>Sets up the buffer ring when the kernel has multishot receive, provided buffer rings and the operations needed; otherwise notes why not.</summary>
    private void SetUpCompletions(bool wanted)
    {
        if (!wanted)
        {
            _completionsReason = CompletionsOffReason();
            return;
        }

        // SENDMSG_ZC (Linux 6.1) is not used: it marks a kernel that has multishot receive (6.0), which the probe cannot ask about.
        if (!_ring.SupportsOps(stackalloc byte[] { Interop.IoUring.IORING_OP_RECV, Interop.IoUring.IORING_OP_SEND, Interop.IoUring.IORING_OP_SENDMSG, Interop.IoUring.IORING_OP_ASYNC_CANCEL, Interop.IoUring.IORING_OP_SENDMSG_ZC }))
        {
            _completionsReason = "the kernel lacks RECV, SEND, SENDMSG, ASYNC_CANCEL or SENDMSG_ZC (Linux 6.1 or later is needed)";
            return;
        }

        nuint ringBytes = (nuint)(BufferCount * sizeof(Interop.IoUringBuf));
        nuint length = ringBytes + ((nuint)BufferCount * BufferSize);
        nint region = Interop.Sys.mmap(0, length, Interop.IoUring.PROT_READ | Interop.IoUring.PROT_WRITE, Interop.IoUring.MAP_PRIVATE | Interop.IoUring.MAP_ANONYMOUS, -1, 0);
        if (region == -1)
        {
            _completionsReason = "mmap of the receive buffers failed with " + ErrnoNames.NameOf(Interop.Errno.Last());
            return;
        }

        _bufferRegion = region;
        _bufferRegionLength = length;
        _bufferRing = (Interop.IoUringBuf*)region;
        _bufferBase = (byte*)region + ringBytes;
        int errno = -1;
        if (IncrementalBuffersWanted)
        {
            // The large layout in the same mapping; a kernel before 6.12 refuses the flag (EINVAL).
            UseLayout(incremental: true);
            errno = RegisterBufferRing();
        }

        if (errno != 0)
        {
            UseLayout(incremental: false);
            errno = RegisterBufferRing();
        }

        if (errno != 0)
        {
            _completionsReason = "io_uring_register(IORING_REGISTER_PBUF_RING) failed with " + ErrnoNames.NameOf(errno);
            Interop.Sys.munmap(region, length);
            return;
        }

        _completions = true;
        _completionsReason = string.Empty;
        SetUpFixedFiles();
    }

    /// <summary>Chooses the buffer layout (before the first registration).</summary>
    private void UseLayout(bool incremental)
    {
        _incremental = incremental;
        _bufferSize = incremental ? LargeBufferSize : BufferSize;
        _bufferCount = incremental ? LargeBufferCount : BufferCount;
    }

    /// <summary>
    /// Fills the buffer ring with every buffer not handed out, from its start, and registers it with the current ring
    /// (whose kernel-side head starts at 0). Returns 0, or the errno.
    /// </summary>
    private int RegisterBufferRing()
    {
        for (int bid = 0; bid < _bufferCount; bid++)
        {
            // A new ring (the loop moved to another thread): the old one's partly filled buffer is no longer the kernel's.
            if (_bufferKernelHolds[bid])
            {
                _bufferKernelHolds[bid] = false;
                if (_bufferRefs[bid] == 0)
                {
                    _bufferIsOut[bid] = false;
                    _buffersOut--;
                }
            }

            if (!_bufferIsOut[bid])
            {
                _bufferFilled[bid] = 0;
            }
        }

        _bufferTail = 0;
        for (int bid = 0; bid < _bufferCount; bid++)
        {
            if (!_bufferIsOut[bid])
            {
                PutBuffer((ushort)bid);
            }
        }

        Volatile.Write(ref *(ushort*)((byte*)_bufferRing + 14), _bufferTail);
        var reg = default(Interop.IoUringBufReg);
        reg.RingAddr = (ulong)_bufferRing;
        reg.RingEntries = (uint)_bufferCount;
        reg.Bgid = BufferGroup;
        reg.Flags = _incremental ? Interop.IoUring.IOU_PBUF_RING_INC : (ushort)0;
        using SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle);
        return Interop.IoUring.io_uring_register(_ring.Handle.FileDescriptor, Interop.IoUring.IORING_REGISTER_PBUF_RING, &reg, 1) < 0 ? Interop.Errno.Last() : 0;
    }

    /// <summary>After the ring was replaced (<see cref="MoveToThisThread"/>): registers the buffer ring with the new one.</summary>
    private void MoveBufferRing()
    {
        if (_completions && RegisterBufferRing() is int errno && errno != 0)
        {
            throw ErrnoNames.Create("io_uring_register(IORING_REGISTER_PBUF_RING)", errno);
        }
    }

    /// <summary>
    /// Unregisters the buffer ring (unless the ring's descriptor is closed already: <paramref name="registered"/> false)
    /// and unmaps it, once nothing in the kernel can write to it any more.
    /// </summary>
    private void TearDownCompletions(bool opsDone, bool registered)
    {
        if (!_completions)
        {
            return;
        }

        _completions = false;
        var reg = default(Interop.IoUringBufReg);
        reg.Bgid = BufferGroup;
        if (registered)
        {
            Interop.IoUring.io_uring_register(_ring.Handle.FileDescriptor, Interop.IoUring.IORING_UNREGISTER_PBUF_RING, &reg, 1);
        }
        if (opsDone)
        {
            // Otherwise the memory stays mapped (a kernel that still holds an operation must not write into a reused address).
            Interop.Sys.munmap(_bufferRegion, _bufferRegionLength);
        }
    }

    /// <inheritdoc/>
    public CompletionChannel Open(SafeHandle handle, ICompletionSink sink)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            int slot = TakeChannelSlot();
            int fd = (int)handle.DangerousGetHandle();
            var channel = new CompletionChannel(fd, slot, ++_channelGenerations[slot], sink);
            _channels[slot] = channel;
            InstallFile(channel, fd);
            return channel;
        }
    }

    /// <summary>A free slot of the channel table. Under <c>_lock</c>.</summary>
    private int TakeChannelSlot() => TakeSlot(ref _channels, ref _channelGenerations, ref _freeChannels, ref _freeChannelCount, ref _channelsUsed);

    /// <inheritdoc/>
    public void StartReceive(CompletionChannel channel)
    {
        lock (_lock)
        {
            if (_disposed || channel.Closed || channel.ReceiveArmed)
            {
                return;
            }

            channel.ReceiveArmed = true;
            _channelOps++;
            if (channel.LastReceiveEnd == -Interop.Errno.ENOBUFS && RingEmpty())
            {
                // Out of buffers, and none came back since: armed now, it would end at once again.
                Park(channel);
                return;
            }

            WriteReceive(channel);
        }
    }

    /// <summary>Writes the multishot receive of <paramref name="channel"/> (armed: counted in flight). Under the lock.</summary>
    private void WriteReceive(CompletionChannel channel)
    {
        Interop.IoUringSqe* sqe = NextSqe();
        sqe->Opcode = Interop.IoUring.IORING_OP_RECV;
        sqe->Flags = Interop.IoUring.IOSQE_BUFFER_SELECT;
        sqe->IoPrio = Interop.IoUring.IORING_RECV_MULTISHOT;
        SetTarget(sqe, channel);
        sqe->BufIndex = BufferGroup;
        sqe->SpliceFdIn = _receiveCap ? ReceiveArmBytes : 0;
        sqe->UserData = OpUserData(KindReceive, channel);
    }

    /// <summary>
    /// Whether the ring has no buffer for the kernel to fill: every buffer is out, and none is one the kernel goes on
    /// filling (incremental layout). Exact once the completions posted before an <c>ENOBUFS</c> are reaped, as they are
    /// when it is dispatched: they name the buffers the kernel took before it found none. Under the lock.
    /// </summary>
    private bool RingEmpty()
    {
        if (_buffersOut < _bufferCount)
        {
            return false;
        }

        if (_incremental)
        {
            for (int bid = 0; bid < _bufferCount; bid++)
            {
                if (_bufferKernelHolds[bid])
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>Parks an armed receive until a buffer comes back (see <see cref="_parked"/>). Under the lock.</summary>
    private void Park(CompletionChannel channel)
    {
        if (_parkedCount == _parked.Length)
        {
            Array.Resize(ref _parked, _parked.Length * 2);
        }

        channel.ReceiveParked = true;
        _parked[_parkedCount++] = channel;
    }

    /// <summary>Takes <paramref name="channel"/> off the parked list. Under the lock.</summary>
    private void Unpark(CompletionChannel channel)
    {
        channel.ReceiveParked = false;
        for (int i = 0; i < _parkedCount; i++)
        {
            if (_parked[i] == channel)
            {
                _parked[i] = _parked[--_parkedCount];
                _parked[_parkedCount] = null;
                return;
            }
        }
    }

    /// <summary>
    /// A parked receive is cancelled (or its channel closed): it never reached the kernel, so its final completion,
    /// <c>ECANCELED</c> as the kernel's would be, comes from the next reap. Under the lock.
    /// </summary>
    private void EndParked(CompletionChannel channel)
    {
        Unpark(channel);
        if (_parkedEndCount == _parkedEnds.Length)
        {
            Array.Resize(ref _parkedEnds, _parkedEnds.Length * 2);
        }

        _parkedEnds[_parkedEndCount++] = channel;
    }

    /// <summary>A buffer came back: every parked receive goes to the kernel with the next wait. Under the lock.</summary>
    private void ArmParked()
    {
        while (_parkedCount > 0)
        {
            CompletionChannel channel = _parked[--_parkedCount]!;
            _parked[_parkedCount] = null;
            channel.ReceiveParked = false;
            WriteReceive(channel);
        }
    }

    /// <summary>Reports the final completions of parked receives that were cancelled (see <see cref="EndParked"/>). Under the lock, while reaping.</summary>
    private void ReapParkedEnds()
    {
        for (int i = 0; i < _parkedEndCount; i++)
        {
            CompletionChannel channel = _parkedEnds[i]!;
            _parkedEnds[i] = null;
            ReapCompletion(OpUserData(KindReceive, channel), -Interop.Errno.ECANCELED, 0);
        }

        _parkedEndCount = 0;
    }

    /// <summary>On dispose: parked receives' ends are reported to nobody; they are no longer in flight. Under the lock.</summary>
    private void DropParkedEnds()
    {
        _channelOps -= _parkedEndCount;
        Array.Clear(_parkedEnds, 0, _parkedEndCount);
        _parkedEndCount = 0;
    }

    /// <summary>
    /// Tests: takes every buffer but <paramref name="keep"/> out of the ring, as if receives held them, until
    /// <see cref="ReturnWithheldReceiveBuffers"/>. On the loop thread, before any receive is armed.
    /// </summary>
    internal void WithholdReceiveBuffers(int keep)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            if (!_completions || _buffersOut != 0 || _withheld is not null || (uint)keep > (uint)_bufferCount)
            {
                throw new InvalidOperationException("Buffers can be withheld once, with the completion path on and no buffer out.");
            }

            var reg = default(Interop.IoUringBufReg);
            reg.Bgid = BufferGroup;
            using (SafeHandleLease lease = SafeHandleLease.Acquire(_ring.Handle))
            {
                if (Interop.IoUring.io_uring_register(_ring.Handle.FileDescriptor, Interop.IoUring.IORING_UNREGISTER_PBUF_RING, &reg, 1) < 0)
                {
                    throw ErrnoNames.Create("io_uring_register(IORING_UNREGISTER_PBUF_RING)", Interop.Errno.Last());
                }
            }

            _withheld = new ushort[_bufferCount - keep];
            for (int i = 0; i < _withheld.Length; i++)
            {
                ushort bid = (ushort)(keep + i);
                _withheld[i] = bid;
                _bufferIsOut[bid] = true;
                _buffersOut++;
            }

            if (RegisterBufferRing() is int errno && errno != 0)
            {
                throw ErrnoNames.Create("io_uring_register(IORING_REGISTER_PBUF_RING)", errno);
            }
        }
    }

    /// <summary>Tests: gives the buffers <see cref="WithholdReceiveBuffers"/> took back to the ring. On the loop thread.</summary>
    internal void ReturnWithheldReceiveBuffers()
    {
        lock (_lock)
        {
            ushort[] withheld = _withheld ?? throw new InvalidOperationException("No buffers are withheld.");
            _withheld = null;
            foreach (ushort bid in withheld)
            {
                GiveBack(bid);
            }
        }
    }

    /// <summary>Receives parked for want of buffers (tests and diagnostics).</summary>
    internal int ParkedReceives => _parkedCount;

    /// <summary>Receives, sends and accepts counted in flight, parked receives included (tests and diagnostics).</summary>
    internal int ChannelOperations => _channelOps;

    /// <inheritdoc/>
    public void CancelReceive(CompletionChannel channel)
    {
        lock (_lock)
        {
            if (_disposed || !channel.ReceiveArmed)
            {
                return;
            }

            if (channel.ReceiveParked)
            {
                EndParked(channel);
                return;
            }

            QueueCancel(OpUserData(KindReceive, channel), channel);
        }
    }

    /// <inheritdoc/>
    public void Send(CompletionChannel channel, Interop.MsgHdr* message)
    {
        lock (_lock)
        {
            if (_disposed || channel.Closed || channel.SendInFlight)
            {
                throw new InvalidOperationException("A send is already in flight, or the channel is closed.");
            }

            Interop.IoUringSqe* sqe = NextSqe();
            SetTarget(sqe, channel);
            sqe->OpFlags = Interop.IoUring.MSG_NOSIGNAL;
            if (message->IovLen == 1)
            {
                // One buffer (a message's echo, most often): a plain send, which spares the kernel copying in the
                // msghdr and its iovec. The bytes stay pinned until the completion all the same.
                var iov = (Interop.IoVec*)message->Iov;
                sqe->Opcode = Interop.IoUring.IORING_OP_SEND;
                sqe->Addr = (ulong)iov->Base;
                sqe->Len = (uint)iov->Len;
            }
            else
            {
                sqe->Opcode = Interop.IoUring.IORING_OP_SENDMSG;
                sqe->Addr = (ulong)message;
                sqe->Len = 1;
            }

            sqe->UserData = OpUserData(KindSend, channel);
            channel.SendInFlight = true;
            _channelOps++;
        }
    }

    /// <inheritdoc/>
    public void Close(CompletionChannel channel)
    {
        lock (_lock)
        {
            if (channel.Closed)
            {
                return;
            }

            channel.Closed = true;
            if (_disposed)
            {
                return;
            }

            if (channel.ReceiveParked)
            {
                EndParked(channel);
            }
            else if (channel.ReceiveArmed)
            {
                QueueCancel(OpUserData(KindReceive, channel), channel);
            }

            if (channel.SendInFlight)
            {
                QueueCancel(OpUserData(KindSend, channel), channel);
            }

            // The registered file table holds a reference on the file too: its entry is cleared with the cancellations.
            bool cleared = ClearFile(channel);
            bool inFlight = channel.ReceiveArmed || channel.SendInFlight;
            if (!inFlight)
            {
                FreeChannel(channel);
            }

            if (inFlight || cleared)
            {
                // Now, not with the next wait: the cancelled operations and the table's entry hold a reference on the
                // file, which must be let go before the caller closes its descriptor (or no FIN or reset would go out
                // until the next wait).
                Submit();
            }
        }
    }

    /// <inheritdoc/>
    public object SinkOf(int index) =>
        (index < _pendingSendCount ? _pendingSends[index] : _pending[index - _pendingSendCount]).Channel!.Owner;

    /// <inheritdoc/>
    public void DispatchCompletion(int index)
    {
        // Sends first: a stream that writes from a receive's callback then knows whether its last send is still in the
        // kernel (the socket pushed back) or done.
        ref PendingCompletion p = ref index < _pendingSendCount ? ref _pendingSends[index] : ref _pending[index - _pendingSendCount];
        CompletionChannel channel = p.Channel!;
        p.Channel = null;
        if (p.Kind == KindAccept)
        {
            DispatchAccept((AcceptChannel)channel, p.Result, p.Flags);
            return;
        }

        bool hasBuffer = (p.Flags & Interop.IoUring.IORING_CQE_F_BUFFER) != 0;
        ushort bid = (ushort)(p.Flags >> Interop.IoUring.IORING_CQE_BUFFER_SHIFT);
        int offset = p.BufferOffset;
        try
        {
            if ((p.Flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
            {
                if (p.Kind == KindReceive)
                {
                    channel.ReceiveArmed = false;
                    channel.ReceiveEnds++;
                    channel.LastReceiveEnd = p.Result;
                }
                else
                {
                    channel.SendInFlight = false;
                }
            }

            if (p.Kind == KindReceive)
            {
                if (p.Result == -Interop.Errno.EINVAL && _receiveCap)
                {
                    // A kernel older than the total cap (Linux 6.16): arm without it from now on (the sink arms again
                    // on a retryable end). Such a kernel's paused stream may hold what its receive took meanwhile.
                    _receiveCap = false;
                    p.Result = -Interop.Errno.EAGAIN;
                }

                ReadOnlySpan<byte> data = hasBuffer && p.Result > 0
                    ? new ReadOnlySpan<byte>(_bufferBase + ((long)bid * _bufferSize) + offset, p.Result)
                    : default;
                if (p.Result > 0)
                {
                    channel.Receives++;
                }

                if (channel.Sink.OnReceiveCompleted(p.Result, (p.Flags & Interop.IoUring.IORING_CQE_F_MORE) != 0, bid, offset, data) && data.Length > 0)
                {
                    // Kept: the sink gives it back (the completion's reference becomes the kept piece's).
                    hasBuffer = false;
                    if (_bufferKeptRefs[bid]++ == 0)
                    {
                        _buffersKept++;
                    }
                }
            }
            else
            {
                channel.Sends++;
                channel.Sink.OnSendCompleted(p.Result == -Interop.Errno.EPIPE ? ReceiveErrorInBatch(channel) ?? p.Result : p.Result);
            }
        }
        finally
        {
            if (hasBuffer)
            {
                Unref(bid);
            }

            if (channel.Closed && !channel.ReceiveArmed && !channel.SendInFlight)
            {
                lock (_lock)
                {
                    FreeChannel(channel);
                }
            }
        }
    }

    /// <summary>
    /// The error that ended <paramref name="channel"/>'s receive in the batch being dispatched (a negative errno), or null.
    /// Sends are dispatched before receives (see <see cref="DispatchCompletion"/>), but the kernel may have run the receive
    /// first: when the peer resets, the receive takes the socket's error (<c>ECONNRESET</c>), and a send that runs after it
    /// finds only a socket that can send no more (<c>EPIPE</c>). That send is reported with the receive's error, as it would
    /// have failed had it run first, so that the connection ends as the reset it is and not as a broken pipe.
    /// </summary>
    private int? ReceiveErrorInBatch(CompletionChannel channel)
    {
        for (int i = 0; i < _pendingReceives; i++)
        {
            ref PendingCompletion r = ref _pending[i];
            if (ReferenceEquals(r.Channel, channel) && r.Kind == KindReceive && r.Result < 0
                && r.Result is not (-Interop.Errno.ECANCELED or -Interop.Errno.ENOBUFS or -Interop.Errno.EAGAIN or -Interop.Errno.EINTR))
            {
                return r.Result;
            }
        }

        return null;
    }

    /// <inheritdoc/>
    public void CompletionsDispatched()
    {
        _pendingCount = 0;
        _pendingSendCount = 0;
        _pendingReceives = 0;
    }

    /// <summary>Takes a completion-side CQE while reaping (under the lock): updates its channel, queues it for dispatch.</summary>
    private void ReapCompletion(ulong userData, int res, uint flags)
    {
        ulong kind = (userData >> KindShift) & 0xF;
        if (kind == KindCancel)
        {
            return;
        }

        if (kind == KindFiles)
        {
            NoteFileUpdate(res);
            return;
        }

        int slot = (int)((userData >> 32) & 0x7FF_FFFF);
        CompletionChannel? channel = slot < _channelsUsed ? _channels[slot] : null;
        bool final = (flags & Interop.IoUring.IORING_CQE_F_MORE) == 0;
        int offset = 0;
        if ((flags & Interop.IoUring.IORING_CQE_F_BUFFER) != 0)
        {
            if (_incremental && res <= 0)
            {
                // Nothing consumed (the end of stream): the buffer stays at the kernel's head, whatever the flags say.
                flags &= ~Interop.IoUring.IORING_CQE_F_BUFFER;
            }
            else
            {
                offset = TakeBuffer((ushort)(flags >> Interop.IoUring.IORING_CQE_BUFFER_SHIFT), res, flags);
            }
        }

        if (channel is null || channel.Generation != (uint)userData)
        {
            // Cannot happen while slots are freed only after their operations' final completions; a buffer is given back regardless.
            if ((flags & Interop.IoUring.IORING_CQE_F_BUFFER) != 0)
            {
                Unref((ushort)(flags >> Interop.IoUring.IORING_CQE_BUFFER_SHIFT));
            }

            return;
        }

        if (final)
        {
            // The channel's own flags change when the completion is dispatched: until then, what the stream does for
            // completions dispatched before this one must still see the operation in flight (a send's bytes not yet
            // consumed must not be sent again).
            _channelOps--;
        }

        ref PendingCompletion p = ref kind == KindSend ? ref Append(ref _pendingSends, ref _pendingSendCount) : ref Append(ref _pending, ref _pendingReceives);
        _pendingCount++;
        p.Channel = channel;
        p.Kind = kind;
        p.Result = res;
        p.Flags = flags;
        p.BufferOffset = offset;
    }

    /// <summary>
    /// A reaped completion names buffer <paramref name="bid"/> (<paramref name="res"/> bytes, under the lock): the buffer is
    /// out of the ring, and the completion refers to it until dispatched. Returns where its bytes start in the buffer:
    /// incrementally consumed, after the bytes of the buffer's earlier completions (the kernel fills a buffer in order, and
    /// posts the completions in that order).
    /// </summary>
    private int TakeBuffer(ushort bid, int res, uint flags)
    {
        if (!_bufferIsOut[bid])
        {
            _bufferIsOut[bid] = true;
            _buffersOut++;
        }

        if (_bufferRefs[bid]++ == 0)
        {
            _buffersReferenced++;
        }

        if (!_incremental)
        {
            return 0;
        }

        int offset = _bufferFilled[bid];
        if (res > _bufferSize - offset)
        {
            throw new InvalidOperationException($"io_uring: a receive completion of {res} bytes at {offset} overruns provided buffer {bid} ({_bufferSize} bytes).");
        }

        _bufferFilled[bid] = offset + res;
        _bufferKernelHolds[bid] = (flags & Interop.IoUring.IORING_CQE_F_BUF_MORE) != 0;
        return offset;
    }

    /// <summary>Drops one reference to buffer <paramref name="bid"/>; the last one, with the kernel done with it, gives it back to the ring.</summary>
    private void Unref(ushort bid)
    {
        if (--_bufferRefs[bid] == 0)
        {
            _buffersReferenced--;
            if (!_bufferKernelHolds[bid])
            {
                GiveBack(bid);
            }
        }
    }

    private static ref PendingCompletion Append(ref PendingCompletion[] array, ref int count)
    {
        if (count == array.Length)
        {
            Array.Resize(ref array, array.Length * 2);
        }

        return ref array[count++];
    }

    private static ulong OpUserData(ulong kind, CompletionChannel channel) =>
        CompletionTag | (kind << KindShift) | ((ulong)(uint)channel.Slot << 32) | channel.Generation;

    private void QueueCancel(ulong target, CompletionChannel channel) =>
        SubmitCancel(Interop.IoUring.IORING_OP_ASYNC_CANCEL, target, OpUserData(KindCancel, channel));

    /// <summary>Frees a closed channel's slot once nothing of it is in the kernel; the generation moves on. Under the lock.</summary>
    private void FreeChannel(CompletionChannel channel)
    {
        if (_channels[channel.Slot] != channel)
        {
            return;
        }

        _channels[channel.Slot] = null;
        ++_channelGenerations[channel.Slot];
        _freeChannels[_freeChannelCount++] = channel.Slot;
    }

    /// <summary>Gives buffer <paramref name="bid"/> back to the ring (loop thread).</summary>
    private void GiveBack(ushort bid)
    {
        if (!_completions)
        {
            return;
        }

        PutBuffer(bid);
        Volatile.Write(ref *(ushort*)((byte*)_bufferRing + 14), _bufferTail);
        _buffersOut--;
        _bufferIsOut[bid] = false;
        _bufferFilled[bid] = 0;
        if (_parkedCount > 0)
        {
            lock (_lock)
            {
                ArmParked();
            }
        }
    }

    /// <summary>Writes buffer <paramref name="bid"/> at the ring's tail (not yet published). Never the entry's last 16 bits: in entry 0 they are the tail.</summary>
    private void PutBuffer(ushort bid)
    {
        Interop.IoUringBuf* entry = &_bufferRing[_bufferTail & (_bufferCount - 1)];
        entry->Addr = (ulong)(_bufferBase + ((long)bid * _bufferSize));
        entry->Len = (uint)_bufferSize;
        entry->Bid = bid;
        _bufferTail++;
    }

    /// <summary>On dispose (under the lock): cancels every channel's operations.</summary>
    /// <summary>Queues the cancellation of every operation <paramref name="channel"/> has in the kernel (receive, send, accept).</summary>
    private void QueueCancelOperations(CompletionChannel channel)
    {
        if (channel.ReceiveParked)
        {
            // Not in the kernel: its end comes from the next reap (a loop that runs again dispatches it; a disposed
            // one drops it, DropParkedEnds).
            EndParked(channel);
        }
        else if (channel.ReceiveArmed)
        {
            QueueCancel(OpUserData(KindReceive, channel), channel);
        }

        if (channel.SendInFlight)
        {
            QueueCancel(OpUserData(KindSend, channel), channel);
        }

        if (channel is AcceptChannel { AcceptArmed: true })
        {
            QueueCancel(OpUserData(KindAccept, channel), channel);
        }
    }

    private void CancelAllChannels()
    {
        for (int slot = 0; slot < _channelsUsed; slot++)
        {
            if (_channels[slot] is CompletionChannel channel)
            {
                channel.Closed = true;
                QueueCancelOperations(channel);
            }
        }
    }

    /// <summary>On dispose: notes a reaped completion-side CQE's end (no sink is called any more).</summary>
    private void NoteFinalOnDispose(ulong userData, uint flags)
    {
        if ((userData & CompletionTag) == 0 || userData >= RemovalUserData || ((userData >> KindShift) & 0xF) is KindCancel or KindFiles)
        {
            return;
        }

        if ((flags & Interop.IoUring.IORING_CQE_F_MORE) == 0)
        {
            _channelOps--;
        }
    }

    /// <summary>One reaped completion waiting for dispatch.</summary>
    private struct PendingCompletion
    {
        public CompletionChannel? Channel;
        public ulong Kind;
        public int Result;
        public uint Flags;

        /// <summary>Where the completion's bytes start in its buffer (incremental layout; 0 otherwise).</summary>
        public int BufferOffset;
    }
}
