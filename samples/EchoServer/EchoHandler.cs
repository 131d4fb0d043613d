using System;
using System.Threading;
using EpollSharp.Connections;

namespace EchoServer;

/// <summary>
/// Writes back what it receives. Backpressure, half-close and graceful shutdown use the defaults of
/// <see cref="ConnectionHandler"/>: receiving pauses while the backlog is above the high watermark, the peer's
/// half-close is answered with ours once everything is echoed, and a shutdown echoes what has arrived, then closes.
/// One instance serves every loop, so its counters are updated with interlocked operations, once per connection.
/// </summary>
internal sealed class EchoHandler : ConnectionHandler
{
    private long _bytesEchoed;

    /// <summary>Bytes echoed by the connections that have closed.</summary>
    public long BytesEchoed => Interlocked.Read(ref _bytesEchoed);

    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
    {
        // Sent at once, or buffered (pooled) for what the kernel does not take; a refused write has closed the connection.
        connection.Write(data);
    }

    public override void OnClosed(Connection connection) => Interlocked.Add(ref _bytesEchoed, connection.BytesSent);

    public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode)
    {
        Console.Error.WriteLine($"accept paused: reason={episode.Reason} error={episode.SocketError} connections={listener.ConnectionCount} shed={episode.ShedConnections}");
    }

    public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode)
    {
        Console.Error.WriteLine($"accept resumed: reason={episode.Reason} paused_ms={(long)episode.Duration.TotalMilliseconds} retries={episode.Retries} shed={episode.ShedConnections}");
    }
}
