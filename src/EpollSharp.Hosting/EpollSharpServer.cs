using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Connections;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace EpollSharp.Hosting;

/// <summary>
/// An EpollSharp server run by the host: a hosted service that creates the <see cref="EventLoopGroup"/> and its listeners
/// when the host starts, and drains the connections when it stops. Registered (once per service collection) by
/// <see cref="EpollSharpServiceCollectionExtensions.AddEpollSharpServer{THandler}(Microsoft.Extensions.DependencyInjection.IServiceCollection, Action{EpollSharpServerOptions}?)"/>;
/// inject it to read where it listens (<see cref="LocalEndPoints"/>) or to reach its loops (<see cref="Group"/>).
/// </summary>
/// <remarks>
/// <para><b>Start.</b> <see cref="StartAsync"/> reads the options (validated: a bad setting fails the start with
/// <see cref="OptionsValidationException"/> naming it), creates the loops and listens on every endpoint. An endpoint that
/// cannot be bound fails the start with <see cref="IOException"/> (its inner exception the
/// <see cref="SocketException"/>, <see cref="SocketError.AddressAlreadyInUse"/> for an address in use); an unavailable
/// backend, with <see cref="PlatformNotSupportedException"/>; socket activation without passed sockets, with
/// <see cref="InvalidOperationException"/>. Nothing is left listening after a failed start.</para>
/// <para><b>Stop.</b> <see cref="StopAsync"/> stops accepting and lets the open connections finish for
/// <see cref="EpollSharpServerOptions.DrainTimeout"/> (<see cref="EventLoopGroup.ShutdownAsync"/>), then resets the rest. When
/// the host's own shutdown timeout ends first (its cancellation token), every connection still open is reset then, and
/// the loops are stopped.</para>
/// <para><b>Loops that die.</b> When the loops end while the host runs (a handler threw with
/// <see cref="EpollSharpServerOptions.StopOnUnhandledException"/> on), the exception is logged and the application is
/// stopped (<see cref="IHostApplicationLifetime.StopApplication"/>); <see cref="EventLoopGroup.Completion"/> of
/// <see cref="Group"/> is then faulted, for the application to choose its exit code.</para>
/// </remarks>
public sealed partial class EpollSharpServer : IHostedService, IDisposable
{
    private readonly IOptions<EpollSharpServerOptions> _options;
    private readonly IHostApplicationLifetime? _lifetime;
    private readonly ILogger _logger;
    private readonly ILoggerFactory? _loggerFactory;
    private readonly object _gate = new();
    private EventLoopGroup? _group;
    private IReadOnlyList<ConnectionListener> _listeners = Array.Empty<ConnectionListener>();
    private int _stopping;

    internal EpollSharpServer(IOptions<EpollSharpServerOptions> options, ConnectionHandler handler, IHostApplicationLifetime? lifetime, ILoggerFactory? loggerFactory)
    {
        _options = options;
        Handler = handler;
        _lifetime = lifetime;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory?.CreateLogger<EpollSharpServer>() ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>The handler of every connection (a singleton, called on several loop threads at once).</summary>
    public ConnectionHandler Handler { get; }

    /// <summary>The loops, from the start on (after the stop, the stopped group, whose counters still read).</summary>
    /// <exception cref="InvalidOperationException">The server has not started.</exception>
    public EventLoopGroup Group => _group ?? throw new InvalidOperationException("The EpollSharp server has not started: its loops are created by StartAsync, when the host starts.");

    /// <summary>The listeners, from the start on: one per loop and endpoint in <see cref="GroupAcceptMode.ReusePort"/> mode, else one per endpoint or passed socket. Empty before the start.</summary>
    public IReadOnlyList<ConnectionListener> Listeners => _listeners;

    /// <summary>The addresses the server listens on, one per endpoint or passed socket, with the ports the system chose for port 0. Empty before the start.</summary>
    public IReadOnlyList<EndPoint> LocalEndPoints
    {
        get
        {
            var endPoints = new List<EndPoint>();
            foreach (ConnectionListener listener in _listeners)
            {
                if (!endPoints.Contains(listener.LocalEndPoint))
                {
                    endPoints.Add(listener.LocalEndPoint);
                }
            }

            return endPoints;
        }
    }

    /// <summary>Creates the loops and listens on the configured endpoints (see the remarks of <see cref="EpollSharpServer"/>).</summary>
    /// <param name="cancellationToken">The host's start token; checked before the loops are created.</param>
    /// <returns>A completed task: the server listens when it returns.</returns>
    /// <exception cref="OptionsValidationException">A setting is not valid; the message names it.</exception>
    /// <exception cref="IOException">An endpoint could not be bound (address in use, permission denied...).</exception>
    /// <exception cref="PlatformNotSupportedException">The backend is not available here.</exception>
    /// <exception cref="InvalidOperationException">Started twice, or socket activation is on and no socket was passed.</exception>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        EpollSharpServerOptions options = _options.Value;
        lock (_gate)
        {
            if (_group is not null)
            {
                throw new InvalidOperationException("The EpollSharp server was started already.");
            }

            // The host's logger factory: the loops and connections log through it (categories EpollSharp.EventLoop and
            // EpollSharp.Connections), a handler's exception and slow callbacks included.
            var loopOptions = new EventLoopOptions
            {
                Backend = options.Backend,
                LoggerFactory = _loggerFactory,
                UnhandledExceptionHandler = options.StopOnUnhandledException ? null : OnHandlerException,
            };
            if (options.CallbackBudget is TimeSpan budget && budget != TimeSpan.Zero)
            {
                loopOptions.CallbackBudget = budget;
            }

            var listenerOptions = new ListenerOptions
            {
                MaxConnections = options.MaxConnections,
                Connection =
                {
                    TriggerMode = options.TriggerMode,
                    IdleTimeout = options.IdleTimeout == TimeSpan.Zero ? Timeout.InfiniteTimeSpan : options.IdleTimeout,
                },
            };
            options.ConfigureListener?.Invoke(listenerOptions);

            var group = new EventLoopGroup(options.Loops, loopOptions);

            var listeners = new List<ConnectionListener>();
            try
            {
                foreach (string text in options.Endpoints)
                {
                    if (!EndpointParser.TryParse(text, out EndPoint? endPoint, out string? error))
                    {
                        throw new InvalidOperationException("Endpoint " + error + ".");
                    }

                    try
                    {
                        listeners.AddRange(group.Listen(endPoint!, Handler, listenerOptions, options.AcceptMode));
                    }
                    catch (SocketException e)
                    {
                        throw new IOException("Cannot listen on " + text.Trim() + ": " + e.Message, e);
                    }
                }

                if (options.SocketActivation)
                {
                    listeners.AddRange(ListenOnActivatedSockets(group, listenerOptions));
                }
            }
            catch
            {
                group.Dispose();
                throw;
            }

            _group = group;
            _listeners = listeners.ToArray();
            foreach (EndPoint endPoint in LocalEndPoints)
            {
                LogListening(EndpointParser.Format(endPoint), group.Backend, group.Loops.Count);
            }

            group.Completion.ContinueWith(
                static (completion, state) => ((EpollSharpServer)state!).OnLoopsEnded(completion),
                this,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// Stops accepting, lets the connections finish for <see cref="EpollSharpServerOptions.DrainTimeout"/> and resets the rest,
    /// or all of them when <paramref name="cancellationToken"/> (the host's shutdown timeout) fires first; then the loops stop.
    /// Does nothing when the server has not started, or is stopped.
    /// </summary>
    /// <param name="cancellationToken">The host's shutdown token: when it fires, the drain ends at once.</param>
    /// <returns>A task that completes when the connections are closed and the loops stopped.</returns>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        EventLoopGroup? group;
        lock (_gate)
        {
            group = _group;
        }

        if (group is null || Interlocked.Exchange(ref _stopping, 1) != 0)
        {
            return;
        }

        TimeSpan drain = _options.Value.DrainTimeout;
        LogStopping(group.ConnectionCount, drain);
        Task shutdown = group.ShutdownAsync(drain);
        var deadline = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        using (cancellationToken.Register(static state => ((TaskCompletionSource<bool>)state!).TrySetResult(true), deadline))
        {
            if (await Task.WhenAny(shutdown, deadline.Task).ConfigureAwait(false) != shutdown)
            {
                LogDeadline(group.ConnectionCount);
                group.Dispose();
            }

            // The group is disposed by now; its loop threads finish their last iteration.
            await Task.WhenAny(group.Completion, deadline.Task).ConfigureAwait(false);
        }

        LogStopped(group.AcceptedCount);
    }

    /// <summary>Resets every connection and stops the loops at once, if the server is running. Idempotent.</summary>
    public void Dispose()
    {
        Interlocked.Exchange(ref _stopping, 1);
        lock (_gate)
        {
            _group?.Dispose();
        }
    }

    private IEnumerable<ConnectionListener> ListenOnActivatedSockets(EventLoopGroup group, ListenerOptions listenerOptions)
    {
        IReadOnlyList<ActivatedSocket> sockets = SocketActivation.TakeSockets();
        if (sockets.Count == 0)
        {
            throw new InvalidOperationException("Socket activation is on (" + nameof(EpollSharpServerOptions.SocketActivation) + "), but no sockets were passed: LISTEN_FDS and LISTEN_PID are not set for this process.");
        }

        var listeners = new List<ConnectionListener>();
        int taken = 0;
        try
        {
            foreach (ActivatedSocket socket in sockets)
            {
                taken++;
                listeners.Add(group.ListenOnSocket(socket.Socket, Handler, listenerOptions));
            }
        }
        catch
        {
            // ListenOnSocket closed the socket it failed on; the ones after it are still ours.
            for (int i = taken; i < sockets.Count; i++)
            {
                sockets[i].Socket.Dispose();
            }

            throw;
        }

        return listeners;
    }

    private void OnHandlerException(Exception exception)
    {
        // The loop has logged it already (EpollSharp.EventLoop, CallbackException) when it has the host's logger factory.
        if (_loggerFactory is null)
        {
            LogHandlerException(exception);
        }
    }

    private void OnLoopsEnded(Task completion)
    {
        AggregateException? exception = completion.Exception; // observed, whether it is logged or not
        if (Volatile.Read(ref _stopping) != 0)
        {
            return;
        }

        if (exception is AggregateException e)
        {
            LogLoopFaulted(e.InnerExceptions.Count == 1 ? e.InnerExceptions[0] : e);
        }
        else
        {
            LogLoopsEnded();
        }

        _lifetime?.StopApplication();
    }

    [LoggerMessage(1, LogLevel.Information, "Listening on {EndPoint} (backend {Backend}, {Loops} loops)")]
    private partial void LogListening(string endPoint, EventLoopBackend backend, int loops);

    [LoggerMessage(2, LogLevel.Information, "Stopping: draining {Connections} connections for up to {DrainTimeout}")]
    private partial void LogStopping(int connections, TimeSpan drainTimeout);

    [LoggerMessage(3, LogLevel.Warning, "The host's shutdown timeout has passed: resetting the {Connections} connections still open")]
    private partial void LogDeadline(int connections);

    [LoggerMessage(4, LogLevel.Information, "Stopped after {Accepted} connections")]
    private partial void LogStopped(long accepted);

    [LoggerMessage(5, LogLevel.Error, "A connection handler threw; its connection was reset")]
    private partial void LogHandlerException(Exception exception);

    [LoggerMessage(6, LogLevel.Critical, "An event loop stopped on an unhandled exception; stopping the application")]
    private partial void LogLoopFaulted(Exception exception);

    [LoggerMessage(7, LogLevel.Error, "The event loops stopped while the host was running; stopping the application")]
    private partial void LogLoopsEnded();

}
