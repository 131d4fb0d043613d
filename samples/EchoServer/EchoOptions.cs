using System;
using System.Globalization;
using System.Net;
using EpollSharp;
using EpollSharp.Connections;

namespace EchoServer;

/// <summary>The command line of the echo server.</summary>
internal sealed class EchoOptions
{
    public const string Usage =
        "usage: EchoServer [--host 127.0.0.1] [--port 8080] [--backend auto|epoll|kqueue|managed] [--loops N] [--trigger level|edge]\n" +
        "                  [--accept-mode auto|reuseport|acceptor] [--max-connections N] [--idle-timeout SECONDS] [--drain-timeout SECONDS]\n" +
        "                  [--systemd] [--callback-budget MS]\n" +
        "  --callback-budget reports a callback that holds a loop longer than MS milliseconds on stderr (0, the default: off);\n" +
        "  --systemd serves the listening sockets passed by socket activation (LISTEN_FDS) instead of --host/--port;\n" +
        "  --loops 0 means one per processor; --max-connections 0 derives the limit from the descriptor limit;\n" +
        "  --idle-timeout 0 disables it; --port 0 picks a free port (printed).";

    public IPAddress Host { get; private set; } = IPAddress.Loopback;

    public int Port { get; private set; } = 8080;

    public EventLoopBackend Backend { get; private set; } = EventLoopBackend.Auto;

    public int Loops { get; private set; } = 1;

    public TriggerMode Trigger { get; private set; } = TriggerMode.Level;

    public GroupAcceptMode AcceptMode { get; private set; } = GroupAcceptMode.Auto;

    public int MaxConnections { get; private set; }

    public TimeSpan IdleTimeout { get; private set; } = TimeSpan.FromMinutes(2);

    public TimeSpan DrainTimeout { get; private set; } = TimeSpan.FromSeconds(5);

    public bool Help { get; private set; }

    public bool SocketActivation { get; private set; }

    public TimeSpan CallbackBudget { get; private set; } = System.Threading.Timeout.InfiniteTimeSpan;

    /// <exception cref="ArgumentException">An unknown option or a bad value.</exception>
    public static EchoOptions Parse(string[] args)
    {
        var options = new EchoOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            if (name is "-h" or "--help")
            {
                options.Help = true;
                continue;
            }

            if (name == "--systemd")
            {
                options.SocketActivation = true;
                continue;
            }

            if (i + 1 >= args.Length)
            {
                throw new ArgumentException($"{name} needs a value (or is unknown).");
            }

            string value = args[++i];
            switch (name)
            {
                case "--host":
                    options.Host = IPAddress.TryParse(value, out IPAddress? host) ? host : throw new ArgumentException($"--host: '{value}' is not an IP address.");
                    break;
                case "--port":
                    options.Port = Integer(name, value, 0, 65535);
                    break;
                case "--backend":
                    options.Backend = value switch
                    {
                        "auto" => EventLoopBackend.Auto,
                        "epoll" => EventLoopBackend.Epoll,
                        "kqueue" => EventLoopBackend.Kqueue,
                        "managed" => EventLoopBackend.Managed,
                        _ => throw new ArgumentException($"--backend: '{value}' is not one of auto, epoll, kqueue, managed."),
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
                case "--accept-mode":
                    options.AcceptMode = value switch
                    {
                        "auto" => GroupAcceptMode.Auto,
                        "reuseport" => GroupAcceptMode.ReusePort,
                        "acceptor" => GroupAcceptMode.SingleAcceptor,
                        _ => throw new ArgumentException($"--accept-mode: '{value}' is not one of auto, reuseport, acceptor."),
                    };
                    break;
                case "--max-connections":
                    options.MaxConnections = Integer(name, value, 0, int.MaxValue);
                    break;
                case "--idle-timeout":
                    int idle = Integer(name, value, 0, 86_400);
                    options.IdleTimeout = idle == 0 ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(idle);
                    break;
                case "--callback-budget":
                    int budget = Integer(name, value, 0, 3_600_000);
                    options.CallbackBudget = budget == 0 ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(budget);
                    break;
                case "--drain-timeout":
                    options.DrainTimeout = TimeSpan.FromSeconds(Integer(name, value, 0, 3600));
                    break;
                default:
                    throw new ArgumentException($"Unknown option {name}.");
            }
        }

        return options;
    }

    public static string BackendName(EventLoopBackend backend) => backend switch
    {
        EventLoopBackend.Epoll => "epoll",
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
