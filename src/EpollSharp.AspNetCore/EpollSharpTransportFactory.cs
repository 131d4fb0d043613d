using System;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Connections;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace EpollSharp.AspNetCore;

/// <summary>
/// Kestrel's transport on EpollSharp: binds TCP (IPv4, IPv6) and Unix domain socket endpoints on a group of EpollSharp
/// event loops, and hands each accepted connection to Kestrel as a <see cref="ConnectionContext"/> whose
/// <see cref="ConnectionContext.Transport"/> the loops fill and drain. Registered by
/// <see cref="EpollSharpWebHostBuilderExtensions.UseEpollSharp"/>; Kestrel asks it for every endpoint it can bind
/// (<see cref="CanBind"/>) and the other registered transports for the rest.
/// </summary>
/// <remarks>
/// The loops (<see cref="Group"/>) are started at the first bind, shared by every endpoint, and stopped when the factory
/// is disposed (with the application's services).
/// </remarks>
public sealed class EpollSharpTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IDisposable
{
    private readonly EpollSharpTransportOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly object _lock = new();
    private EventLoopGroup? _group;
    private bool _disposed;

    /// <summary>Creates the transport with the given options (checked here).</summary>
    /// <param name="options">The transport's settings.</param>
    /// <param name="loggerFactory">Where the loops and listeners log.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The options do not fit together (see <see cref="EpollSharpTransportOptions.Validate"/>).</exception>
    public EpollSharpTransportFactory(IOptions<EpollSharpTransportOptions> options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _options = options.Value ?? throw new ArgumentNullException(nameof(options), "The options have no value.");
        _options.Validate();
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("EpollSharp.AspNetCore");
    }

    /// <summary>The event loops that serve the connections; <see langword="null"/> until the first endpoint is bound.</summary>
    public EventLoopGroup? Group
    {
        get
        {
            lock (_lock)
            {
                return _group;
            }
        }
    }

    /// <summary>Whether this transport can bind <paramref name="endpoint"/>: an <see cref="IPEndPoint"/> or a <see cref="UnixDomainSocketEndPoint"/>.</summary>
    /// <param name="endpoint">The endpoint Kestrel is about to bind.</param>
    /// <returns><see langword="true"/> for the endpoints this transport binds; Kestrel gives the others to the next transport.</returns>
    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint or UnixDomainSocketEndPoint;

    /// <summary>Binds <paramref name="endpoint"/> and starts accepting connections on it.</summary>
    /// <param name="endpoint">An <see cref="IPEndPoint"/> (port 0 picks a free port) or a <see cref="UnixDomainSocketEndPoint"/>.</param>
    /// <param name="cancellationToken">Checked before binding (binding itself does not wait).</param>
    /// <returns>The listener; its <see cref="IConnectionListener.EndPoint"/> is the address actually bound.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="endpoint"/> is null.</exception>
    /// <exception cref="NotSupportedException"><paramref name="endpoint"/> is of another kind (see <see cref="CanBind"/>).</exception>
    /// <exception cref="AddressInUseException">Another socket listens on the address.</exception>
    /// <exception cref="SocketException">Binding or listening failed otherwise.</exception>
    /// <exception cref="ObjectDisposedException">The factory was disposed.</exception>
    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (!CanBind(endpoint))
        {
            throw new NotSupportedException($"The EpollSharp transport binds IPEndPoint and UnixDomainSocketEndPoint endpoints, not {endpoint.GetType().Name} ({endpoint}).");
        }

        cancellationToken.ThrowIfCancellationRequested();
        EventLoopGroup group = GetGroup();
        IConnectionListener listener = EpollSharpConnectionListener.Bind(group, endpoint, _options);
        return new ValueTask<IConnectionListener>(listener);
    }

    /// <summary>Stops the event loops; connections still open are reset. Idempotent.</summary>
    public void Dispose()
    {
        EventLoopGroup? group;
        lock (_lock)
        {
            _disposed = true;
            group = _group;
            _group = null;
        }

        group?.Dispose();
    }

    private EventLoopGroup GetGroup()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_group is null)
            {
                var loopOptions = new EventLoopOptions
                {
                    Backend = _options.Backend,
                    LoggerFactory = _loggerFactory,
                    ThreadName = "EpollSharp Kestrel loop",
                    MaxEventsPerWait = _options.MaxEventsPerWait,

                    // An exception escaping a loop callback is logged; the loop goes on serving its other connections.
                    UnhandledExceptionHandler = e => _logger.LogError(e, "An exception escaped an EpollSharp loop callback."),
                };
                _group = new EventLoopGroup(_options.LoopCount, loopOptions);
            }

            return _group;
        }
    }
}
