using System;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using EpollSharp;
using EpollSharp.Connections;

namespace TcpProxy;

/// <summary>The command line of the proxy.</summary>
internal sealed class ProxyOptions
{
    public const string Usage =
        "usage: TcpProxy --target HOST:PORT|[V6]:PORT|NAME:PORT|unix:/path [--listen 127.0.0.1:8080] [--loops N]\n" +
        "                [--backend auto|epoll|io_uring|kqueue|managed] [--trigger level|edge] [--idle-timeout SECONDS]\n" +
        "                [--drain-timeout SECONDS] [--connect-timeout SECONDS]\n" +
        "  --loops 0 means one per processor; --idle-timeout 0 disables it; port 0 in --listen picks a free port (printed).";

    public IPEndPoint Listen { get; private set; } = new(IPAddress.Loopback, 8080);

    public EndPoint? Target { get; private set; }

    public EventLoopBackend Backend { get; private set; } = EventLoopBackend.Auto;

    public int Loops { get; private set; } = 1;

    public TriggerMode Trigger { get; private set; } = TriggerMode.Level;

    public TimeSpan IdleTimeout { get; private set; } = TimeSpan.FromMinutes(2);

    public TimeSpan DrainTimeout { get; private set; } = TimeSpan.FromSeconds(5);

    public TimeSpan ConnectTimeout { get; private set; } = TimeSpan.FromSeconds(10);

    public bool Help { get; private set; }

    /// <exception cref="ArgumentException">An unknown option, a bad value, or no --target.</exception>
    public static ProxyOptions Parse(string[] args)
    {
        var options = new ProxyOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            if (name is "-h" or "--help")
            {
                options.Help = true;
                continue;
            }

            if (i + 1 >= args.Length)
            {
                throw new ArgumentException($"{name} needs a value (or is unknown).");
            }

            string value = args[++i];
            switch (name)
            {
                case "--listen":
                    options.Listen = ParseEndPoint(name, value) as IPEndPoint ?? throw new ArgumentException($"--listen: '{value}' is not IP:PORT.");
                    break;
                case "--target":
                    options.Target = ParseEndPoint(name, value);
                    if (options.Target is IPEndPoint { Port: 0 } or DnsEndPoint { Port: 0 })
                    {
                        throw new ArgumentException($"--target: '{value}' has port 0.");
                    }

                    break;
                case "--backend":
                    options.Backend = value switch
                    {
                        "auto" => EventLoopBackend.Auto,
                        "epoll" => EventLoopBackend.Epoll,
                        "io_uring" => EventLoopBackend.IoUring,
                        "kqueue" => EventLoopBackend.Kqueue,
                        "managed" => EventLoopBackend.Managed,
                        _ => throw new ArgumentException($"--backend: '{value}' is not one of auto, epoll, io_uring, kqueue, managed."),
                    };
                    break;
                case "--loops":
                    options.Loops = Integer(name, value, 0, 1024);
                    break;
                case "--trigger":
                    options.Trigger = value switch
                    {
                        "level" => TriggerMode.Level,
                        "edge" => TriggerMode.Edge,
                        _ => throw new ArgumentException($"--trigger: '{value}' is not one of level, edge."),
                    };
                    break;
                case "--idle-timeout":
                    int idle = Integer(name, value, 0, 86_400);
                    options.IdleTimeout = idle == 0 ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(idle);
                    break;
                case "--drain-timeout":
                    options.DrainTimeout = TimeSpan.FromSeconds(Integer(name, value, 0, 3600));
                    break;
                case "--connect-timeout":
                    options.ConnectTimeout = TimeSpan.FromSeconds(Integer(name, value, 1, 3600));
                    break;
                default:
                    throw new ArgumentException($"Unknown option {name}.");
            }
        }

        if (!options.Help && options.Target is null)
        {
            throw new ArgumentException("--target is required.");
        }

        return options;
    }

    /// <summary>IPv4:PORT, [IPv6]:PORT, NAME:PORT or unix:/path (Unix domain socket; for a target only).</summary>
    public static EndPoint ParseEndPoint(string name, string value)
    {
        if (value.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = value.Substring("unix:".Length);
            return path.Length > 0 ? new UnixDomainSocketEndPoint(path) : throw new ArgumentException($"{name}: '{value}' has no path.");
        }

        int colon = value.LastIndexOf(':');
        if (colon <= 0 || colon == value.Length - 1)
        {
            throw new ArgumentException($"{name}: '{value}' is not HOST:PORT.");
        }

        string host = value.Substring(0, colon);
        int port = Integer(name, value.Substring(colon + 1), 0, 65535);
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            return IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out IPAddress? v6) && v6.AddressFamily == AddressFamily.InterNetworkV6
                ? new IPEndPoint(v6, port)
                : throw new ArgumentException($"{name}: '{host}' is not an IPv6 address.");
        }

        if (host.Contains(':', StringComparison.Ordinal))
        {
            throw new ArgumentException($"{name}: write an IPv6 address in brackets, [{host}]:{port}.");
        }

        return IPAddress.TryParse(host, out IPAddress? address) ? new IPEndPoint(address, port) : new DnsEndPoint(host, port);
    }

    public static string BackendName(EventLoopBackend backend) => backend switch
    {
        EventLoopBackend.Epoll => "epoll",
        EventLoopBackend.IoUring => "io_uring",
        EventLoopBackend.Kqueue => "kqueue",
        EventLoopBackend.Managed => "managed",
        _ => "auto",
    };

    private static int Integer(string name, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < min || n > max)
        {
            throw new ArgumentException($"{name}: '{value}' is not a whole number from {min} to {max}.");
        }

        return n;
    }
}
