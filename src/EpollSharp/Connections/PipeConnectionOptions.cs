using System;
using System.Buffers;

namespace EpollSharp.Connections;

/// <summary>
/// Settings of the pipes of each <see cref="PipeConnection"/>: where their buffers come from, the thresholds at which
/// each direction applies backpressure, and where the application's continuations run. The defaults are Kestrel's
/// socket transport's (1 MiB / 512 KiB in, 64 KiB / 32 KiB out, continuations on the thread pool).
/// </summary>
/// <remarks>
/// The values are read when a <see cref="PipeConnectionHandler"/> is created (or <see cref="PipeConnection.ConnectAsync"/> is
/// called); changing them afterwards has no effect on it. Each threshold is checked when set; that a resume threshold is
/// not above its pause threshold is checked then too (<see cref="Validate"/>).
/// </remarks>
public sealed partial class PipeConnectionOptions
{
    private long _inputPauseThreshold = 1024 * 1024;
    private long _inputResumeThreshold = 512 * 1024;
    private long _outputPauseThreshold = 64 * 1024;
    private long _outputResumeThreshold = 32 * 1024;

    /// <summary>
    /// The pool both pipes take their segments from. <see langword="null"/> (default) is the library's own pool of 4 KiB
    /// and 16 KiB blocks, kept for reuse (up to 16 MiB of free blocks of each size), with larger segments from
    /// <see cref="ArrayPool{T}.Shared"/>:
    /// no allocation per segment even when many connections hold segments at once (<see cref="MemoryPool{T}.Shared"/>,
    /// i.e. <see cref="ArrayPool{T}.Shared"/>, keeps only a few arrays per size and core and allocates past them). Segments
    /// go back to the pool as soon as the reader of a pipe has consumed them, so an idle connection holds none.
    /// </summary>
    public MemoryPool<byte>? MemoryPool { get; set; }

    /// <summary>
    /// When the application has this many received bytes unread in <see cref="PipeConnection.Transport"/>'s input, the
    /// loop stops reading the socket (<see cref="Connection.PauseReceiving"/>); the kernel's buffer then fills and TCP
    /// slows the peer. Default 1 MiB (Kestrel's <c>MaxReadBufferSize</c>); 0 turns input backpressure off (unbounded).
    /// The pipe may hold up to one read (<see cref="ConnectionOptions.ReceiveBufferSize"/>) more than this.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long InputPauseThreshold
    {
        get => _inputPauseThreshold;
        set => _inputPauseThreshold = CheckNotNegative(value, nameof(InputPauseThreshold));
    }

    /// <summary>
    /// Once the application has read the input down to below this many unread bytes, the loop reads the socket again.
    /// Default 512 KiB; at most <see cref="InputPauseThreshold"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long InputResumeThreshold
    {
        get => _inputResumeThreshold;
        set => _inputResumeThreshold = CheckNotNegative(value, nameof(InputResumeThreshold));
    }

    /// <summary>
    /// When this many bytes the application flushed to <see cref="PipeConnection.Transport"/>'s output are not yet handed
    /// to the connection (which itself holds up to <see cref="ConnectionOptions.HighWatermark"/> more while the socket is
    /// backed up), the application's <c>FlushAsync</c> does not complete until they drain below
    /// <see cref="OutputResumeThreshold"/>. Default 64 KiB (Kestrel's <c>MaxWriteBufferSize</c>); 0 turns output
    /// backpressure off (unbounded).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long OutputPauseThreshold
    {
        get => _outputPauseThreshold;
        set => _outputPauseThreshold = CheckNotNegative(value, nameof(OutputPauseThreshold));
    }

    /// <summary>A waiting <c>FlushAsync</c> completes once the unsent output drains below this. Default 32 KiB; at most <see cref="OutputPauseThreshold"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long OutputResumeThreshold
    {
        get => _outputResumeThreshold;
        set => _outputResumeThreshold = CheckNotNegative(value, nameof(OutputResumeThreshold));
    }

    /// <summary>
    /// Where the application runs: <see langword="false"/> (default, as Kestrel) on the thread pool — the application
    /// delegate is started there and every <c>ReadAsync</c> / <c>FlushAsync</c> continuation goes there, so blocking in
    /// it costs only a pool thread; <see langword="true"/> on the connection's loop thread — the application is started
    /// inline by <see cref="ConnectionHandler.OnConnected"/> and its continuations (and any <c>await</c> that captures the
    /// loop's synchronization context) are posted to the loop. That saves two thread hops per message and allocates
    /// nothing, but the application must then never block: while it blocks, every other connection of the loop waits.
    /// </summary>
    public bool RunContinuationsOnLoop { get; set; }

    /// <summary>Checks that each resume threshold is not above its pause threshold (when that one is not 0), and that TLS server options have a certificate.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A resume threshold is above its pause threshold.</exception>
    /// <exception cref="ArgumentException">The <c>TlsServer</c> options have no server certificate.</exception>
    public void Validate()
    {
        if (InputPauseThreshold > 0 && InputResumeThreshold > InputPauseThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(InputResumeThreshold), InputResumeThreshold, $"InputResumeThreshold must not be above InputPauseThreshold ({InputPauseThreshold}).");
        }

        if (OutputPauseThreshold > 0 && OutputResumeThreshold > OutputPauseThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(OutputResumeThreshold), OutputResumeThreshold, $"OutputResumeThreshold must not be above OutputPauseThreshold ({OutputPauseThreshold}).");
        }

        ValidateTls();
    }

    /// <summary>Checks the TLS settings (only where they exist: see PipeConnectionOptions.Tls.cs).</summary>
    partial void ValidateTls();

    internal PipeConnectionOptions Clone() => (PipeConnectionOptions)MemberwiseClone();

    private static long CheckNotNegative(long value, string name)
    {
        if (value < 0)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be 0 or more.");
        }

        return value;
    }
}
