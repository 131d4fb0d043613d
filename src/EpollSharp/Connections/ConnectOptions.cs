using System;
using System.Net;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>Settings for an outbound connection made with <see cref="Connection.Connect"/> or <see cref="Connection.ConnectAsync"/>.</summary>
public sealed class ConnectOptions
{
    private TimeSpan _connectTimeout = TimeSpan.FromSeconds(10);
    private ConnectionOptions _connection = new();

    /// <summary>
    /// How long the whole attempt may take, name resolution and every address tried included, before it fails with
    /// <see cref="ConnectFailureReason.TimedOut"/>. Default 10 seconds; <see cref="Timeout.InfiniteTimeSpan"/> leaves it to
    /// the kernel (whose own SYN retries give up after about two minutes on Linux).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not infinite, and not positive or above 3,650 days.</exception>
    public TimeSpan ConnectTimeout
    {
        get => _connectTimeout;
        set => _connectTimeout = ConnectionSettings.IsValidTimeout(value, allowZero: false)
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "ConnectTimeout must be positive and at most 3,650 days, or Timeout.InfiniteTimeSpan.");
    }

    /// <summary>The settings of the connection once it is established (the same as an accepted connection's).</summary>
    /// <exception cref="ArgumentNullException">The value is null.</exception>
    public ConnectionOptions Connection
    {
        get => _connection;
        set => _connection = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Tests only: resolves the host of a <see cref="DnsEndPoint"/> in place of <c>Dns.GetHostAddressesAsync</c>, so that a test
    /// chooses the addresses and their order (the next-address fallback cannot be provoked otherwise where a name resolves to
    /// one address). Called on the thread pool, as the system resolver is. Null, the default: the system resolver.
    /// </summary>
    internal Func<string, Task<IPAddress[]>>? Resolver { get; set; }
}
