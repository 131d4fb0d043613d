using System;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace EpollSharp.Connections;

/// <summary>
/// What the connection layer logs (category <c>EpollSharp.Connections</c>), with the <c>LoggerMessage</c> pattern (no
/// allocation when the level is off). Event ids 100 to 199; docs/articles/operating.md lists them.
/// </summary>
internal static partial class ConnectionLog
{
    /// <summary>The category of the connection layer's logs.</summary>
    internal const string Category = "EpollSharp.Connections";

    [LoggerMessage(EventId = 100, EventName = "ListenerStarted", Level = LogLevel.Information,
        Message = "Listening on {EndPoint} ({Backend}, {Loops} loop(s), handler {Handler}, at most {MaxConnections} connections).")]
    internal static partial void ListenerStarted(ILogger logger, EndPoint endPoint, EventLoopBackend backend, int loops, string handler, int maxConnections);

    [LoggerMessage(EventId = 101, EventName = "ListenerStopped", Level = LogLevel.Information,
        Message = "Stopped listening on {EndPoint}: {Accepted} connection(s) accepted, {Open} still open.")]
    internal static partial void ListenerStopped(ILogger logger, EndPoint endPoint, long accepted, int open);

    [LoggerMessage(EventId = 102, EventName = "AcceptPaused", Level = LogLevel.Warning,
        Message = "Accepting on {EndPoint} paused: {Reason} ({SocketError}); {Shed} pending connection(s) shed. It resumes when a connection closes or after a retry delay.")]
    internal static partial void AcceptPaused(ILogger logger, EndPoint endPoint, AcceptPauseReason reason, SocketError socketError, int shed);

    [LoggerMessage(EventId = 103, EventName = "AcceptResumed", Level = LogLevel.Information,
        Message = "Accepting on {EndPoint} resumed after {DurationMs} ms paused ({Reason}); {Shed} pending connection(s) were shed.")]
    internal static partial void AcceptResumed(ILogger logger, EndPoint endPoint, long durationMs, AcceptPauseReason reason, int shed);

    [LoggerMessage(EventId = 104, EventName = "ConnectionFailed", Level = LogLevel.Debug,
        Message = "Connection {ConnectionId} ({RemoteEndPoint}) closed: {Reason} ({SocketError}).")]
    internal static partial void ConnectionFailed(ILogger logger, long connectionId, EndPoint? remoteEndPoint, ConnectionCloseReason reason, SocketError socketError);

    [LoggerMessage(EventId = 105, EventName = "SocketOptionFailed", Level = LogLevel.Warning,
        Message = "Connection {ConnectionId} ({RemoteEndPoint}): the kernel refused {Option} ({SocketError}); the connection goes on without it.")]
    internal static partial void SocketOptionFailed(ILogger logger, long connectionId, EndPoint? remoteEndPoint, string option, SocketError socketError);

    [LoggerMessage(EventId = 106, EventName = "ConnectFailed", Level = LogLevel.Debug,
        Message = "Connecting to {EndPoint} failed: {Reason} ({SocketError}), last address {LastAddress}.")]
    internal static partial void ConnectFailed(ILogger logger, EndPoint endPoint, ConnectFailureReason reason, SocketError socketError, EndPoint? lastAddress);

    [LoggerMessage(EventId = 107, EventName = "ShutdownStarted", Level = LogLevel.Information,
        Message = "Shutting down the listener on {EndPoint}: {Open} connection(s) to drain, within {DrainTimeout}.")]
    internal static partial void ShutdownStarted(ILogger logger, EndPoint endPoint, int open, TimeSpan drainTimeout);

    [LoggerMessage(EventId = 108, EventName = "DrainTimedOut", Level = LogLevel.Warning,
        Message = "The listener on {EndPoint} has drained, but {Reset} connection(s) were still open at the drain deadline and were reset.")]
    internal static partial void DrainTimedOut(ILogger logger, EndPoint endPoint, int reset);
}
