using System;
using System.Collections.Generic;
using EpollSharp.Connections;

namespace EpollSharp.Hosting;

/// <summary>
/// The settings of an <see cref="EpollSharpServer"/>: where it listens, its loops and the limits of its connections. Bound
/// from configuration (by default the section <see cref="SectionName"/>; see
/// <see cref="EpollSharpServiceCollectionExtensions.AddEpollSharpServer{THandler}(Microsoft.Extensions.DependencyInjection.IServiceCollection, Microsoft.Extensions.Configuration.IConfiguration)"/>)
/// and checked when the host starts: a bad value fails the start with a message that names the setting.
/// </summary>
/// <example>
/// <code language="json">
/// {
///   "EpollSharp": {
///     "Endpoints": [ "127.0.0.1:8080", "[::]:8443", "unix:/run/echo.sock" ],
///     "Loops": 0,
///     "IdleTimeout": "00:02:00",
///     "DrainTimeout": "00:00:05"
///   }
/// }
/// </code>
/// The same from the environment: <c>EpollSharp__Endpoints__0=127.0.0.1:8080</c>, <c>EpollSharp__Loops=0</c>.
/// </example>
public sealed class EpollSharpServerOptions
{
    /// <summary>The configuration section the options are usually bound from: <c>EpollSharp</c>.</summary>
    public const string SectionName = "EpollSharp";

    /// <summary>
    /// Where to listen, one string each: an IP endpoint with its port (<c>127.0.0.1:8080</c>, <c>0.0.0.0:8080</c>,
    /// <c>[::1]:8080</c>, <c>[::]:8080</c>, which takes IPv4 clients too), or a Unix domain socket: <c>unix:/run/app.sock</c>
    /// (a file-system path) or <c>unix:@name</c> (Linux's abstract namespace). Port 0 picks a free port (see
    /// <see cref="EpollSharpServer.LocalEndPoints"/>). Empty by default: give at least one, or turn on
    /// <see cref="SocketActivation"/>.
    /// </summary>
    public IList<string> Endpoints { get; } = new List<string>();

    /// <summary>
    /// Also serve the listening sockets that systemd (or <c>systemd-socket-activate</c>) passed to the process
    /// (<see cref="Connections.SocketActivation.TakeSockets"/>). The start fails when none were passed. Linux only. Default
    /// <see langword="false"/>.
    /// </summary>
    public bool SocketActivation { get; set; }

    /// <summary>How many event loops (one thread each); 0 (the default) for one per processor. At most 4,096.</summary>
    public int Loops { get; set; }

    /// <summary>The loops' readiness mechanism; <see cref="EventLoopBackend.Auto"/> (the default) picks the platform's best.</summary>
    public EventLoopBackend Backend { get; set; } = EventLoopBackend.Auto;

    /// <summary>How connections are spread over the loops (<see cref="GroupAcceptMode"/>). Default <see cref="GroupAcceptMode.Auto"/>.</summary>
    public GroupAcceptMode AcceptMode { get; set; } = GroupAcceptMode.Auto;

    /// <summary>How connections are registered with their loop (<see cref="ConnectionOptions.TriggerMode"/>). Default <see cref="TriggerMode.Level"/>.</summary>
    public TriggerMode TriggerMode { get; set; } = TriggerMode.Level;

    /// <summary>
    /// The most connections held at once, for all endpoints together; past it, accepting pauses until one closes
    /// (<see cref="ListenerOptions.MaxConnections"/>). 0 (the default) derives the limit from the process's descriptor limit.
    /// </summary>
    public int MaxConnections { get; set; }

    /// <summary>
    /// A connection on which nothing happened for this long is closed (<see cref="ConnectionOptions.IdleTimeout"/>). Default
    /// 2 minutes; <see cref="TimeSpan.Zero"/> or <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> turns it off.
    /// </summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// On the host's shutdown, how long open connections may take to finish (<see cref="EventLoopGroup.ShutdownAsync"/>)
    /// before the rest are reset. The host's own shutdown timeout (<c>HostOptions.ShutdownTimeout</c>, 30 seconds by
    /// default) caps it: at the host's deadline every connection still open is reset. Default 5 seconds;
    /// <see cref="TimeSpan.Zero"/> resets them at once; <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> leaves the host's
    /// deadline alone to end the drain.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The budget of one loop callback (<see cref="EventLoopOptions.CallbackBudget"/>): a callback that runs longer is logged
    /// as a warning (category <c>EpollSharp.EventLoop</c>), while it runs and when it returns. <see langword="null"/> (the default) or <see cref="TimeSpan.Zero"/>: off. 1 ms to 1 hour.
    /// </summary>
    public TimeSpan? CallbackBudget { get; set; }

    /// <summary>
    /// What happens when a connection handler throws. The connection is reset either way
    /// (<see cref="ConnectionCloseReason.HandlerFault"/>). <see langword="false"/> (the default): the exception is logged as
    /// an error (category <c>EpollSharp.EventLoop</c>) and the loop goes on serving its other connections. <see langword="true"/>: the loop stops, its
    /// connections are reset, and the application is stopped (<c>IHostApplicationLifetime.StopApplication</c>) with the
    /// exception logged, for a supervisor (systemd's <c>Restart=</c>) to start a clean process.
    /// </summary>
    public bool StopOnUnhandledException { get; set; }

    /// <summary>
    /// Called with the listener options built from these settings, before the listeners are created: the place for what
    /// has no setting here (<see cref="ListenerOptions.Backlog"/>, <see cref="ListenerOptions.UnixSocketMode"/>, keep-alive
    /// and buffer sizes in <see cref="ListenerOptions.Connection"/>...). Not bound from configuration.
    /// </summary>
    public Action<ListenerOptions>? ConfigureListener { get; set; }
}
