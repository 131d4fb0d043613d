using System;

namespace EpollSharp.Connections;

/// <summary>Settings for a <see cref="ConnectionListener"/>. Every limit has a safe default.</summary>
public sealed class ListenerOptions
{
    private int _backlog = 1024;
    private int _maxConnections;
    private int _maxAcceptsPerEvent = 64;
    private TimeSpan _acceptRetryDelay = TimeSpan.FromMilliseconds(10);
    private TimeSpan _maxAcceptRetryDelay = TimeSpan.FromSeconds(1);
    private ConnectionOptions _connection = new();
    private int? _unixSocketMode;

    /// <summary>The listen queue length passed to <c>listen</c> (the kernel caps it at <c>net.core.somaxconn</c>). Default 1,024.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int Backlog
    {
        get => _backlog;
        set => _backlog = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The backlog must be positive.");
    }

    /// <summary>
    /// Set <c>SO_REUSEADDR</c> (and only that: not <c>SO_REUSEPORT</c>, which .NET's <c>SocketOptionName.ReuseAddress</c> also
    /// sets on Unix) before binding, so a restarted server can bind its port while old connections linger in <c>TIME_WAIT</c>.
    /// Binding an address that another socket listens on still fails with address-in-use. Default <see langword="true"/>.
    /// Ignored on Windows, where the option means something else (it would let another process take the port), and for
    /// Unix domain sockets.
    /// </summary>
    public bool ReuseAddress { get; set; } = true;

    /// <summary>
    /// Set <c>SO_REUSEPORT</c> before binding, so several sockets (several processes, or several listeners) can listen on the
    /// same port and the kernel spreads new connections among them. Default <see langword="false"/>. The risk that comes
    /// with it: any process of the same user that sets the option can bind the port too and silently take a share of the
    /// connections (a second copy of the server started by mistake, say); without it such a bind fails with address-in-use.
    /// A group in <see cref="GroupAcceptMode.ReusePort"/> mode does not need it for its own loops.
    /// Supported on Linux and IP endpoints only: elsewhere creating the listener throws <see cref="PlatformNotSupportedException"/>
    /// (BSD and macOS have an option of that name, but it does not spread connections), and on a Unix domain socket endpoint
    /// <see cref="ArgumentException"/>.
    /// </summary>
    public bool ReusePort { get; set; }

    /// <summary>
    /// On a listener bound to the IPv6 any-address (<see cref="System.Net.IPAddress.IPv6Any"/>), accept IPv4 clients too
    /// (they appear as IPv4-mapped addresses, <c>::ffff:a.b.c.d</c>): <c>IPV6_V6ONLY</c> is cleared before binding, whatever
    /// the system default (<c>net.ipv6.bindv6only</c>). <see langword="false"/> sets <c>IPV6_V6ONLY</c>, so that the listener
    /// takes IPv6 clients only and another socket may listen on the same port for IPv4. Default <see langword="true"/>.
    /// Not applied to any other endpoint (a specific IPv6 address, IPv4, Unix domain sockets).
    /// </summary>
    public bool DualMode { get; set; } = true;

    /// <summary>
    /// For a Unix domain socket bound to a file-system path: the permission bits given to the socket file after binding and
    /// before listening (<c>chmod</c>), e.g. <c>0b110_000_000</c> (octal 600: only the owner may connect) or
    /// <c>Convert.ToInt32("660", 8)</c>. Connecting needs write permission on the file. <see langword="null"/> (the default)
    /// leaves the mode <c>bind</c> gives, 777 less the process's umask. Setting it for another endpoint makes
    /// <see cref="ConnectionListener.Listen(EventLoop, System.Net.EndPoint, ConnectionHandler, ListenerOptions?)"/> throw <see cref="ArgumentException"/>; on a system other than Linux,
    /// <see cref="PlatformNotSupportedException"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 0 to octal 777 (511).</exception>
    public int? UnixSocketMode
    {
        get => _unixSocketMode;
        set => _unixSocketMode = value is null or (>= 0 and <= 511) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "UnixSocketMode holds permission bits only: 0 to octal 777 (511).");
    }

    /// <summary>
    /// The most connections the listener holds at once; past it, it pauses accepting (<see cref="AcceptPauseReason.ConnectionLimit"/>)
    /// until one closes. 0 (the default) derives it from the process's descriptor limit (see <see cref="DefaultMaxConnections"/>),
    /// keeping headroom for the descriptors the .NET runtime opens by itself: a process that gives its last descriptor to a
    /// connection can fail in places that cannot handle it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public int MaxConnections
    {
        get => _maxConnections;
        set => _maxConnections = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MaxConnections must be 0 (derived) or positive.");
    }

    /// <summary>
    /// The most connections accepted per readiness event, so that a flood of connections cannot starve established ones. Default 64; 1 to 4,096.
    /// On io_uring's completion path, where the kernel posts each accepted connection as a completion of its own, it only
    /// sets (with <see cref="Backlog"/>) how close to the connection limit a multishot accept may run.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 4,096.</exception>
    public int MaxAcceptsPerEvent
    {
        get => _maxAcceptsPerEvent;
        set => _maxAcceptsPerEvent = value is >= 1 and <= 4096 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MaxAcceptsPerEvent must be between 1 and 4,096.");
    }

    /// <summary>The first delay before accepting is retried after running out of descriptors; it doubles on each failure up to <see cref="MaxAcceptRetryDelay"/>. Default 10 ms.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive, or above 3,650 days.</exception>
    public TimeSpan AcceptRetryDelay
    {
        get => _acceptRetryDelay;
        set => _acceptRetryDelay = value > TimeSpan.Zero && value <= ConnectionSettings.MaxTimeout ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The delay must be positive and at most 3,650 days.");
    }

    /// <summary>The longest delay between accept retries while descriptors are exhausted. Default 1 second.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive, or above 3,650 days.</exception>
    public TimeSpan MaxAcceptRetryDelay
    {
        get => _maxAcceptRetryDelay;
        set => _maxAcceptRetryDelay = value > TimeSpan.Zero && value <= ConnectionSettings.MaxTimeout ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The delay must be positive and at most 3,650 days.");
    }

    /// <summary>
    /// Keep one spare descriptor open. When accept fails for lack of descriptors, the listener closes the spare, accepts
    /// the pending connection with it and resets it at once (an abortive close), so its client learns straight away that
    /// the server is full instead of waiting in the listen queue; then it takes the spare back. Default <see langword="true"/>.
    /// </summary>
    public bool KeepReserveDescriptor { get; set; } = true;

    /// <summary>The settings of each accepted connection.</summary>
    /// <exception cref="ArgumentNullException">The value is null.</exception>
    public ConnectionOptions Connection
    {
        get => _connection;
        set => _connection = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// The connection limit used when <see cref="MaxConnections"/> is 0, computed now: the soft <c>RLIMIT_NOFILE</c>
    /// (on Linux read from <c>/proc/self/limits</c>; .NET raises the soft limit to the hard one at start-up), less the
    /// descriptors open now, less headroom of 1/32 of the limit (at least 64, at most 512). Where the limit cannot be
    /// read (other systems), 4,096. Always at least 1.
    /// </summary>
    public static int DefaultMaxConnections => DescriptorLimits.DefaultMaxConnections();

    internal ListenerOptions Clone()
    {
        var clone = (ListenerOptions)MemberwiseClone();
        clone._connection = _connection.Clone();
        return clone;
    }
}
