using System;
using System.Runtime.InteropServices;

namespace EpollSharp.Backends;

/// <summary>
/// What a backend that does the I/O itself (io_uring) offers beside readiness: a byte stream's receives and sends as
/// submitted operations whose completions it hands to an <see cref="ICompletionSink"/>. It knows nothing of what the
/// stream carries (TCP or a Unix socket, a connection's states): the caller decides when to receive, what to send and
/// when to close. Every member is called on the loop thread only.
/// </summary>
internal interface ICompletionIo
{
    /// <summary>Whether the completion path is set up and may be used (otherwise streams stay on readiness).</summary>
    bool Enabled { get; }

    /// <summary>The size of each provided receive buffer: a receive completion carries at most this many bytes (64 KiB where the kernel consumes buffers incrementally, 4 KiB otherwise).</summary>
    int ReceiveBufferSize { get; }

    /// <summary>
    /// Provided buffers that a receive completion not yet handed over, or a piece a sink kept, refers to (an idle stream
    /// holds none). A buffer the kernel is still filling incrementally, which nothing refers to, is not counted.
    /// </summary>
    int ReceiveBuffersInUse { get; }

    /// <summary>Whether so many provided buffers are kept (or out) that a sink should copy what it holds rather than keep more.</summary>
    bool ReceiveBuffersScarce { get; }

    /// <summary>The whole of provided buffer <paramref name="bufferId"/>, of which a sink kept a piece.</summary>
    ReadOnlySpan<byte> ReceiveBuffer(ushort bufferId);

    /// <summary>Lets go of a kept piece of a buffer (once per kept completion, and per <see cref="KeepReceiveBuffer"/>): the buffer goes back to the kernel when nothing refers to it any more.</summary>
    void ReleaseReceiveBuffer(ushort bufferId);

    /// <summary>
    /// Keeps provided buffer <paramref name="bufferId"/>, which a receive completion being handed over refers to, out of
    /// the kernel's reach for one more piece (counted as kept, like a piece a sink kept), until
    /// <see cref="ReleaseReceiveBuffer"/>: a stream sends bytes of it with no copy.
    /// </summary>
    void KeepReceiveBuffer(ushort bufferId);

    /// <summary>Opens a channel on the stream <paramref name="handle"/> (which the caller keeps open until <see cref="Close"/>); completions go to <paramref name="sink"/>.</summary>
    CompletionChannel Open(SafeHandle handle, ICompletionSink sink);

    /// <summary>Arms a multishot receive into the provided buffers; it goes to the kernel with the loop's next wait. Only when none is armed.</summary>
    void StartReceive(CompletionChannel channel);

    /// <summary>Asks the kernel to cancel the armed receive; its final completion (with no more to come) follows.</summary>
    void CancelReceive(CompletionChannel channel);

    /// <summary>
    /// Submits a send of the bytes that <paramref name="message"/> (a <c>struct msghdr</c>) points to through its iovecs
    /// (one iovec goes as a plain send of its bytes); the message, the iovecs and the bytes must stay valid and pinned
    /// until its completion. Only when no send is in
    /// flight. It goes to the kernel with the loop's next wait; on a stream socket it waits for room when the socket has
    /// none, and completes with the bytes the kernel took, which may be part of them when the socket fills (the caller
    /// submits the rest), unless an error ends it.
    /// </summary>
    unsafe void Send(CompletionChannel channel, Interop.MsgHdr* message);

    /// <summary>
    /// Closes the channel: cancels what is in flight, at once (so the kernel lets go of the file before the caller closes
    /// it). The completions still to come (the cancelled ones) are handed to the sink; the channel is freed after the last.
    /// </summary>
    void Close(CompletionChannel channel);

    /// <summary>
    /// Asks for <see cref="ICompletionSink.OnSendReady"/> at the end of the loop's iteration (<see cref="RunDeferredSends"/>),
    /// right before the wait that submits: a stream's sends of one iteration go out as one, and while completions are
    /// dispatched a send in flight has always reached the kernel (so one still in flight means the socket pushed back).
    /// </summary>
    void DeferSend(CompletionChannel channel);

    /// <summary>Calls <see cref="ICompletionSink.OnSendReady"/> for each channel that asked with <see cref="DeferSend"/>.</summary>
    void RunDeferredSends();

    /// <summary>
    /// Whether a receive completion of <paramref name="channel"/> waits to be dispatched (reaped by the last wait and not
    /// yet handed over, or still in the completion queue): bytes that arrived and that the sink has not seen.
    /// </summary>
    bool ReceivePending(CompletionChannel channel);

    /// <summary>How many completions the last wait reaped, to dispatch with <see cref="DispatchCompletion"/>.</summary>
    int PendingCompletions { get; }

    /// <summary>The sink completion <paramref name="index"/> goes to (an <see cref="ICompletionSink"/> or an <see cref="IAcceptSink"/>; to name the callback in slow-callback reports).</summary>
    object SinkOf(int index);

    /// <summary>Hands the completion <paramref name="index"/> to its sink (and gives its receive buffer back afterwards, even when the sink throws).</summary>
    void DispatchCompletion(int index);

    /// <summary>Every pending completion was dispatched.</summary>
    void CompletionsDispatched();

    /// <summary>
    /// Opens a channel on the listening stream socket <paramref name="handle"/> (which the caller keeps open until
    /// <see cref="CloseAccept"/> returned), for <see cref="StartAccept"/>; its completions go to <paramref name="sink"/>.
    /// </summary>
    AcceptChannel OpenAccept(SafeHandle handle, IAcceptSink sink);

    /// <summary>
    /// Arms an accept on the channel (each accepted stream a completion carrying its new descriptor, non-blocking and
    /// close-on-exec): with <paramref name="multishot"/>, one that accepts every stream that arrives until it is cancelled
    /// or fails; otherwise one that accepts a single stream. It goes to the kernel with the loop's next wait. Only when
    /// none is armed.
    /// </summary>
    void StartAccept(AcceptChannel channel, bool multishot);

    /// <summary>Asks the kernel to cancel the armed accept; its final completion (with no more to come) follows.</summary>
    void CancelAccept(AcceptChannel channel);

    /// <summary>
    /// Whether an armed accept waits until a stream is pending before it takes a descriptor for it (io_uring's
    /// <c>IORING_ACCEPT_POLL_FIRST</c>): then an accept that fails for lack of descriptors while nothing is pending can be
    /// armed again without spinning. Otherwise it fails at once while the descriptor table is full.
    /// </summary>
    bool AcceptWaitsForPending { get; }

    /// <summary>
    /// Closes an accept channel: cancels its accept and waits (at most a second) until the kernel posted the accept's final
    /// completion, so that the kernel holds no reference on the listening socket when it returns (closing it then releases
    /// the address). The completions still to come are handed to the sink.
    /// </summary>
    void CloseAccept(AcceptChannel channel);
}

/// <summary>Receives an accept channel's completions, on the loop thread.</summary>
internal interface IAcceptSink
{
    /// <summary>
    /// An accept completed: <paramref name="result"/> is the accepted stream's descriptor (the sink owns it), or a negated
    /// errno. <paramref name="more"/> is false when the multishot accept ended (it must be armed again to go on).
    /// </summary>
    void OnAcceptCompleted(int result, bool more);
}

/// <summary>Receives a channel's completions, on the loop thread.</summary>
internal interface ICompletionSink
{
    /// <summary>
    /// A receive completed: <paramref name="result"/> bytes (in <paramref name="data"/>, at <paramref name="bufferOffset"/>
    /// in provided buffer <paramref name="bufferId"/>: several completions may share a buffer), 0 at the end of stream, or
    /// a negated errno. <paramref name="more"/> is false when the multishot receive ended (it must be armed again to go on).
    /// </summary>
    /// <returns>
    /// True to keep the buffer (the data stays valid until <see cref="ICompletionIo.ReleaseReceiveBuffer"/>); false to
    /// give it back when the call returns.
    /// </returns>
    bool OnReceiveCompleted(int result, bool more, ushort bufferId, int bufferOffset, ReadOnlySpan<byte> data);

    /// <summary>The end of the iteration a send was deferred to (<see cref="ICompletionIo.DeferSend"/>): submit it now.</summary>
    void OnSendReady();

    /// <summary>A send completed: the bytes sent, or a negated errno (<c>ECANCELED</c> after a close).</summary>
    void OnSendCompleted(int result);
}

/// <summary>
/// One stream's operations on a completion backend: its slot and generation (in each operation's user data), its registered
/// file index, and what is in flight. One per connection for its whole life, so it holds only what every stream needs
/// (64 bytes); an accept
/// channel's own state is in <see cref="AcceptChannel"/>.
/// </summary>
internal class CompletionChannel
{
    internal CompletionChannel(int fd, int slot, uint generation, ICompletionSink sink)
    {
        Fd = fd;
        Slot = slot;
        Generation = generation;
        Sink = sink;
    }

    /// <summary>For <see cref="AcceptChannel"/>, which has no stream sink.</summary>
    private protected CompletionChannel(int fd, int slot, uint generation)
    {
        Fd = fd;
        Slot = slot;
        Generation = generation;
        Sink = null!;
    }

    internal int Fd { get; }

    /// <summary>
    /// The stream's index in the backend's registered file table, which its operations name instead of <see cref="Fd"/>
    /// (so that the kernel need not look the descriptor up for each); -1 when it has none (no table, or the table full).
    /// </summary>
    internal int FileIndex { get; set; } = -1;

    internal int Slot { get; }

    internal uint Generation { get; }

    /// <summary>The stream's sink; null for an <see cref="AcceptChannel"/>.</summary>
    internal ICompletionSink Sink { get; }

    /// <summary>Whoever gets the completions (to name a callback).</summary>
    internal object Owner => (object?)Sink ?? ((AcceptChannel)this).AcceptSink;

    /// <summary>A multishot receive is in the kernel (its final completion not yet reaped).</summary>
    internal bool ReceiveArmed { get; set; }

    /// <summary>A send is in the kernel (its completion not yet reaped).</summary>
    internal bool SendInFlight { get; set; }

    /// <summary>
    /// The receive is armed (<see cref="ReceiveArmed"/>) but parked: its last one ended for want of buffers and none came
    /// back since, so it waits in the backend, not in the kernel, until one does.
    /// </summary>
    internal bool ReceiveParked { get; set; }

    /// <summary><see cref="ICompletionIo.Close"/> was called.</summary>
    internal bool Closed { get; set; }

    /// <summary>
    /// Receives completed with data (for tests and diagnostics; 32 bits, which wrap, so that the channel stays 64 bytes with
    /// its registered-file index).
    /// </summary>
    internal uint Receives { get; set; }

    /// <summary>The result of the last receive completion that ended a multishot receive (for tests and diagnostics).</summary>
    internal int LastReceiveEnd { get; set; }

    /// <summary>How many multishot receives ended (for tests and diagnostics).</summary>
    internal int ReceiveEnds { get; set; }

    /// <summary>Sends completed (for tests and diagnostics; 32 bits, which wrap, as <see cref="Receives"/>).</summary>
    internal uint Sends { get; set; }
}

/// <summary>A listening stream's accept operations on a completion backend (<see cref="ICompletionIo.OpenAccept"/>).</summary>
internal sealed class AcceptChannel : CompletionChannel
{
    internal AcceptChannel(int fd, int slot, uint generation, IAcceptSink acceptSink)
        : base(fd, slot, generation)
    {
        AcceptSink = acceptSink;
    }

    /// <summary>The sink of the accept channel.</summary>
    internal IAcceptSink AcceptSink { get; }

    /// <summary>An accept is in the kernel (its final completion not yet reaped).</summary>
    internal bool AcceptArmed { get; set; }

    /// <summary>The accept armed last is a multishot one.</summary>
    internal bool AcceptMultishot { get; set; }

    /// <summary>Accept completions with a descriptor (for tests and diagnostics).</summary>
    internal long Accepts { get; set; }
}
