using System;
using System.Net;
using System.Threading;
using EpollSharp.Connections;

namespace TcpProxy;

/// <summary>The two connections of one proxied session: the accepted client and the dialed target (once connected).</summary>
internal sealed class Relay
{
    public Relay(Connection client) => Client = client;

    public Connection Client { get; }

    /// <summary>The connection to the target; null until it is made.</summary>
    public Connection? Target { get; set; }

    /// <summary>A graceful stop of the proxy reached this session: the target was sent end of stream, the client's further input is dropped.</summary>
    public bool Draining { get; set; }

    /// <summary>The client's end of stream came before the target connected (not expected while the client is not read; kept for safety).</summary>
    public bool ClientReadClosed { get; set; }

    public Connection? PeerOf(Connection connection) => ReferenceEquals(connection, Client) ? Target : Client;
}

/// <summary>
/// Relays bytes between each accepted client connection and a connection the handler dials to the target on the same
/// loop. One handler serves both sides of every session (the <see cref="Relay"/> in <see cref="Connection.UserState"/>
/// tells which is which); one instance serves every loop, so its counters are interlocked, updated once per connection.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Until the target is connected the client is not read (receiving paused): nothing has to be held, nothing is lost.</item>
/// <item>Backpressure both ways: when the bytes buffered towards one side reach the high watermark, the other side stops
/// being read, until they drain to the low watermark. A side that does not read thus stops the other from being read
/// (TCP flow control then slows the sender), and a session holds at most about the watermark plus one read per direction.</item>
/// <item>Half-close passed through: end of stream from one side shuts down sending to the other (after what is buffered);
/// a connection closes once both its directions are done.</item>
/// <item>A connection that ends any other way (reset by its peer, an error, a timeout) resets the other one.</item>
/// <item>A target that cannot be reached resets the client.</item>
/// </list>
/// </remarks>
internal sealed class ProxyHandler : ConnectionHandler
{
    private const int MaxLoggedFailures = 10;

    private readonly EndPoint _target;
    private readonly ConnectOptions _connectOptions;
    private long _bytesToTarget;
    private long _bytesToClient;
    private long _connectFailures;
    private long _resetsPassed;

    public ProxyHandler(EndPoint target, ConnectOptions connectOptions)
    {
        _target = target;
        _connectOptions = connectOptions;
    }

    /// <summary>Bytes sent to the target by the connections that have closed.</summary>
    public long BytesToTarget => Interlocked.Read(ref _bytesToTarget);

    /// <summary>Bytes sent to the clients by the connections that have closed.</summary>
    public long BytesToClient => Interlocked.Read(ref _bytesToClient);

    /// <summary>Dials to the target that failed (the client was reset).</summary>
    public long ConnectFailures => Interlocked.Read(ref _connectFailures);

    /// <summary>Sessions in which one connection ended abnormally and the other was reset for it.</summary>
    public long ResetsPassed => Interlocked.Read(ref _resetsPassed);

    public override void OnConnected(Connection connection)
    {
        if (connection.Listener is not null)
        {
            // An accepted client: dial the target on this loop, and read nothing until it answers.
            var relay = new Relay(connection);
            connection.UserState = relay;
            connection.PauseReceiving();
            try
            {
                Connection.Connect(connection.Loop, _target, this, _connectOptions, relay);
            }
            catch (ObjectDisposedException)
            {
                connection.Abort(); // the loop is going away
            }

            return;
        }

        // The target connection of a session.
        var session = (Relay)connection.UserState!;
        session.Target = connection;
        if (session.Client.IsClosed)
        {
            connection.Abort();
            return;
        }

        if (session.Draining)
        {
            connection.Close();
            return;
        }

        if (session.ClientReadClosed)
        {
            connection.Shutdown();
        }

        session.Client.ResumeReceiving();
    }

    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
    {
        var relay = (Relay)connection.UserState!;
        Connection? peer = relay.PeerOf(connection);
        if (peer is null)
        {
            // Cannot happen (the client is not read before the target connects); never drop bytes silently.
            connection.Abort();
            return;
        }

        // Sent at once or buffered (pooled) for what the kernel does not take; at the high watermark OnWritePaused stops
        // this side from being read. Refused: the peer has ended (its OnClosed resets this side) or is shut down for a
        // graceful stop (the rest of the client's input is dropped).
        if (!peer.Write(data) && !relay.Draining)
        {
            connection.Abort();
        }
    }

    public override void OnWritePaused(Connection connection) => ((Relay)connection.UserState!).PeerOf(connection)?.PauseReceiving();

    public override void OnWriteResumed(Connection connection) => ((Relay)connection.UserState!).PeerOf(connection)?.ResumeReceiving();

    public override void OnReadClosed(Connection connection)
    {
        // End of stream from one side: end of stream to the other once what is buffered for it is sent. This connection
        // closes when the other side's end of stream has been passed back to it as well.
        var relay = (Relay)connection.UserState!;
        if (relay.PeerOf(connection) is { } peer)
        {
            peer.Shutdown();
        }
        else
        {
            relay.ClientReadClosed = true; // passed on once the target is connected
        }
    }

    public override void OnShutdownRequested(Connection connection)
    {
        // The proxy stops gracefully: the target gets end of stream after what the client sent so far; its answer still
        // flows back, followed by end of stream to the client. Input from the client after this point is dropped.
        var relay = (Relay)connection.UserState!;
        relay.Draining = true;
        if (relay.Target is { } target)
        {
            target.Shutdown();
        }
        else
        {
            connection.Close();
        }
    }

    public override void OnClosed(Connection connection)
    {
        if (connection.UserState is not Relay relay)
        {
            return;
        }

        bool isClient = ReferenceEquals(connection, relay.Client);
        Interlocked.Add(ref isClient ? ref _bytesToClient : ref _bytesToTarget, connection.BytesSent);
        Connection? peer = relay.PeerOf(connection);
        if (connection.CloseReason != ConnectionCloseReason.Completed && peer is { IsClosed: false })
        {
            // Reset, error, timeout or abort on one side: the other side is reset, not ended in order, so that it does
            // not take a truncated stream for a complete one.
            Interlocked.Increment(ref _resetsPassed);
            peer.Abort();
        }
    }

    public override void OnConnectFailed(ConnectFailure failure)
    {
        var relay = (Relay)failure.UserState!;
        if (Interlocked.Increment(ref _connectFailures) <= MaxLoggedFailures)
        {
            Console.Error.WriteLine($"connect failed: {failure.Reason} {failure.SocketError} target={_target} client={relay.Client.RemoteEndPoint}");
        }

        relay.Client.Abort();
    }

    public override void OnAcceptPaused(ConnectionListener listener, AcceptPauseEpisode episode)
    {
        Console.Error.WriteLine($"accept paused: reason={episode.Reason} error={episode.SocketError} connections={listener.ConnectionCount} shed={episode.ShedConnections}");
    }

    public override void OnAcceptResumed(ConnectionListener listener, AcceptPauseEpisode episode)
    {
        Console.Error.WriteLine($"accept resumed: reason={episode.Reason} paused_ms={(long)episode.Duration.TotalMilliseconds} retries={episode.Retries} shed={episode.ShedConnections}");
    }
}
