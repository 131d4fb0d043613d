using System;
using System.Diagnostics;
using System.Net.Sockets;

namespace EpollSharp.Connections;

/// <summary>
/// One period during which a <see cref="ConnectionListener"/> did not accept: what caused it, how long it lasted,
/// and how many pending connections it closed at once to tell their clients. Passed to
/// <see cref="ConnectionHandler.OnAcceptPaused(ConnectionListener, AcceptPauseEpisode)"/> when it begins and to
/// <see cref="ConnectionHandler.OnAcceptResumed(ConnectionListener, AcceptPauseEpisode)"/> when it ends, on the listener's loop thread.
/// </summary>
public sealed class AcceptPauseEpisode
{
    private readonly long _startTimestamp;
    private long _endTimestamp;

    internal AcceptPauseEpisode(AcceptPauseReason reason, SocketError socketError)
    {
        Reason = reason;
        SocketError = socketError;
        _startTimestamp = Stopwatch.GetTimestamp();
        StartedAt = DateTimeOffset.UtcNow;
    }

    /// <summary>What stopped accepting (the first cause, if several followed one another).</summary>
    public AcceptPauseReason Reason { get; }

    /// <summary>The error accept returned (<see cref="System.Net.Sockets.SocketError.TooManyOpenSockets"/> for <c>EMFILE</c>/<c>ENFILE</c>); <see cref="System.Net.Sockets.SocketError.Success"/> for <see cref="AcceptPauseReason.ConnectionLimit"/>.</summary>
    public SocketError SocketError { get; }

    /// <summary>When the episode began (UTC).</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>How long accepting was paused: so far while it lasts, in total once it ended.</summary>
    public TimeSpan Duration => TimeSpan.FromSeconds(((_endTimestamp != 0 ? _endTimestamp : Stopwatch.GetTimestamp()) - _startTimestamp) / (double)Stopwatch.Frequency);

    /// <summary>Whether accepting has resumed.</summary>
    public bool HasEnded => _endTimestamp != 0;

    /// <summary>How many times accepting was retried and failed again during the episode.</summary>
    public int Retries { get; internal set; }

    /// <summary>
    /// How many pending connections were accepted and closed at once (with the reserve descriptor, see
    /// <see cref="ListenerOptions.KeepReserveDescriptor"/>) so that their clients learn at once that the server is full.
    /// </summary>
    public int ShedConnections { get; internal set; }

    internal void End() => _endTimestamp = Stopwatch.GetTimestamp();
}
