using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading;
using EpollSharp;
using EpollSharp.Connections;
using EpollSharp.Hosting;

namespace EchoServer;

/// <summary>
/// The echo server's settings: the configuration section <c>EchoServer</c>, read by the host from appsettings.json,
/// appsettings.{Environment}.json, environment variables (<c>EchoServer__Port=9000</c>) and the command line, where each
/// setting also has the flag it always had (<c>--port 9000</c>). Later sources win, so a flag overrides the file.
/// </summary>
internal sealed class EchoOptions
{
    public const string SectionName = "EchoServer";

    /// <summary>Every flag: its setting (the configuration key under <see cref="SectionName"/>), its value and what it does.</summary>
    private static readonly (string Flag, string Key, string Value, string Default, string Meaning)[] s_flags =
    {
        ("--host", nameof(Host), "ADDRESS", "127.0.0.1", "IP address to listen on"),
        ("--port", nameof(Port), "PORT", "8080", "port; 0 picks a free one (printed)"),
        ("--backend", nameof(Backend), "auto|epoll|io_uring|kqueue|managed", "auto", "the loops' readiness mechanism"),
        ("--loops", nameof(Loops), "N", "1", "event loops, one thread each; 0: one per processor"),
        ("--trigger", nameof(Trigger), "level|edge", "level", "trigger mode of the connections"),
        ("--accept-mode", nameof(AcceptMode), "auto|reuseport|acceptor", "auto", "how connections are spread over the loops"),
        ("--max-connections", nameof(MaxConnections), "N", "0", "connections held at once; 0: derived from the descriptor limit"),
        ("--idle-timeout", nameof(IdleTimeout), "SECONDS", "120", "close a connection idle this long; 0: never"),
        ("--drain-timeout", nameof(DrainTimeout), "SECONDS", "5", "on SIGTERM/SIGINT, how long connections may take to finish"),
        ("--systemd", nameof(Systemd), "", "false", "serve the sockets passed by socket activation (LISTEN_FDS) instead of --host/--port"),
        ("--callback-budget", nameof(CallbackBudget), "MS", "0", "log a callback that holds a loop longer than MS milliseconds; 0: off"),
        ("--api", nameof(Api), "callback|pipe|stream", "callback", "how connections are served: callbacks, a pipe echo loop, or a Stream (pipe with --tls)"),
        ("--tls", TlsPathKey, "PATH.pfx", "(none)", "serve TLS with this PKCS#12 certificate and key (needs --api pipe or stream)"),
        ("--tls-password", TlsPasswordKey, "PASSWORD", "(none)", "the password of the --tls file (better: the environment variable)"),
        ("--pipe-continuations", nameof(PipeContinuations), "loop|pool", "loop", "with --api pipe or stream: run the application's continuations on the loops or the thread pool"),
    };

    private const string TlsPathKey = nameof(Tls) + ":" + nameof(TlsSettings.Path);
    private const string TlsPasswordKey = nameof(Tls) + ":" + nameof(TlsSettings.Password);

    public string Host { get; set; } = "127.0.0.1";

    public int Port { get; set; } = 8080;

    public EventLoopBackend Backend { get; set; } = EventLoopBackend.Auto;

    public int Loops { get; set; } = 1;

    public TriggerMode Trigger { get; set; } = TriggerMode.Level;

    public string AcceptMode { get; set; } = "auto";

    public int MaxConnections { get; set; }

    /// <summary>Seconds; 0 turns the idle timeout off.</summary>
    public int IdleTimeout { get; set; } = 120;

    /// <summary>Seconds.</summary>
    public int DrainTimeout { get; set; } = 5;

    public bool Systemd { get; set; }

    /// <summary>Milliseconds; 0 turns the budget off.</summary>
    public int CallbackBudget { get; set; }

    /// <summary>callback, pipe or stream; unset (or empty): callback, or pipe when <see cref="Tls"/> has a path. See <see cref="ServingApi"/>.</summary>
    public string? Api { get; set; }

    /// <summary>loop or pool: where the pipe application's continuations run (<see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>). See <see cref="ContinuationsOnLoop"/>.</summary>
    public string PipeContinuations { get; set; } = "loop";

    /// <summary>Whether the pipe application's continuations run on the loops (<c>--pipe-continuations loop</c>, the default) rather than the thread pool.</summary>
    public bool ContinuationsOnLoop => ParseContinuations();

    /// <summary>The certificate to serve TLS with; no path, no TLS.</summary>
    public TlsSettings Tls { get; set; } = new();

    /// <summary>How the connections are served, from <see cref="Api"/> and <see cref="Tls"/> (after <see cref="Validate"/>).</summary>
    public EchoApi ServingApi => ParseApi();

    /// <summary>Whether TLS is on (<c>--tls PATH</c>).</summary>
    public bool TlsEnabled => !string.IsNullOrEmpty(Tls.Path);

    /// <summary>The flags mapped to their configuration keys, for the command-line configuration source.</summary>
    public static Dictionary<string, string> SwitchMappings()
    {
        var mappings = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var flag in s_flags)
        {
            mappings[flag.Flag] = SectionName + ":" + flag.Key;
        }

        return mappings;
    }

    /// <summary>
    /// The arguments as the command-line configuration source reads them: a flag without a value (<c>--systemd</c>) gets
    /// <c>=true</c>. An unknown flag, or a flag that needs a value and has none, is an error; arguments that are
    /// configuration keys (<c>--EchoServer:Port=9000</c>, <c>--Logging:LogLevel:Default=Information</c>) and the host's
    /// own (<c>--environment</c>, <c>--contentRoot</c>, <c>--applicationName</c>) pass through.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown flag, or one without its value.</exception>
    public static string[] NormalizeArguments(string[] args)
    {
        var result = new List<string>(args.Length);
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            int equals = arg.IndexOf('=', StringComparison.Ordinal);
            string name = equals < 0 ? arg : arg.Substring(0, equals);
            if (name == "--systemd")
            {
                if (equals < 0 && i + 1 < args.Length && bool.TryParse(args[i + 1], out _))
                {
                    result.Add("--systemd=" + args[++i]);
                }
                else
                {
                    result.Add(equals < 0 ? "--systemd=true" : arg);
                }

                continue;
            }

            bool known = Array.Exists(s_flags, f => f.Flag == name);
            bool hostKey = name.Equals("--environment", StringComparison.OrdinalIgnoreCase) || name.Equals("--contentRoot", StringComparison.OrdinalIgnoreCase)
                || name.Equals("--applicationName", StringComparison.OrdinalIgnoreCase);
            if (!known && !hostKey && !name.Contains(':', StringComparison.Ordinal))
            {
                throw new ArgumentException(arg.StartsWith('-') ? $"Unknown option {name}." : $"Unexpected argument '{arg}'.");
            }

            bool backend = name == "--backend";
            result.Add(backend && equals >= 0 ? name + "=" + BackendValue(arg.Substring(equals + 1)) : arg);
            if (equals < 0)
            {
                if (i + 1 >= args.Length)
                {
                    throw new ArgumentException($"{name} needs a value.");
                }

                string value = args[++i];
                result.Add(backend ? BackendValue(value) : value);
            }
        }

        return result.ToArray();
    }

    /// <summary>The backend's name as the configuration binder reads it: <c>io_uring</c> is the enum member <c>IoUring</c>.</summary>
    private static string BackendValue(string value) =>
        value.Trim().Equals("io_uring", StringComparison.OrdinalIgnoreCase) ? nameof(EventLoopBackend.IoUring) : value;

    /// <summary>Checks the values; the message names the flag and the configuration key of a bad one.</summary>
    /// <exception cref="ArgumentException">A value is out of range or not one of the choices.</exception>
    public void Validate()
    {
        if (!IPAddress.TryParse(Host, out _))
        {
            throw Bad(nameof(Host), Host, "is not an IP address.");
        }

        Range(nameof(Port), Port, 0, 65535);
        Range(nameof(Loops), Loops, 0, 1024);
        Range(nameof(MaxConnections), MaxConnections, 0, int.MaxValue);
        Range(nameof(IdleTimeout), IdleTimeout, 0, 86_400);
        Range(nameof(DrainTimeout), DrainTimeout, 0, 3600);
        Range(nameof(CallbackBudget), CallbackBudget, 0, 3_600_000);
        if (Backend is not (EventLoopBackend.Auto or EventLoopBackend.Epoll or EventLoopBackend.IoUring or EventLoopBackend.Kqueue or EventLoopBackend.Managed))
        {
            throw Bad(nameof(Backend), Backend, "is not one of auto, epoll, io_uring, kqueue, managed.");
        }

        if (Trigger is not (TriggerMode.Level or TriggerMode.Edge))
        {
            throw Bad(nameof(Trigger), Trigger, "is not one of level, edge.");
        }

        _ = ParseAcceptMode();
        if (!ParseContinuations() && ParseApi() == EchoApi.Callback)
        {
            throw new ArgumentException(string.Format(CultureInfo.InvariantCulture,
                "--pipe-continuations pool ({0}:{1}) needs --api pipe or --api stream ({0}:{2}): the callback api has no continuations.",
                SectionName, nameof(PipeContinuations), nameof(Api)));
        }

        if (ParseApi() == EchoApi.Callback && TlsEnabled)
        {
            throw new ArgumentException(string.Format(CultureInfo.InvariantCulture,
                "--api callback ({0}:{1}) cannot serve --tls ({0}:{2}): TLS runs on the pipe layer; use --api pipe or --api stream (or leave --api out: with --tls it is pipe).",
                SectionName, nameof(Api), TlsPathKey));
        }
    }

    /// <summary>
    /// Loads the certificate of <c>--tls</c> (with <c>--tls-password</c>) from its PKCS#12 file. Call after <see cref="Validate"/>,
    /// only when <see cref="TlsEnabled"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The file is missing or unreadable, the password is wrong, it is not PKCS#12, or it holds no private key; the message names the flag and the key.</exception>
    public X509Certificate2 LoadCertificate()
    {
        string path = Tls.Path!;
        if (!File.Exists(path))
        {
            throw Bad(TlsPathKey, path, "does not exist (or is not a file).");
        }

        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(path, Tls.Password);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException(string.Format(CultureInfo.InvariantCulture,
                "--tls ({0}:{1}): '{2}' cannot be loaded as PKCS#12 with the given --tls-password ({0}:{3}): {4} (a wrong or missing password, or not a .pfx file)",
                SectionName, TlsPathKey, path, TlsPasswordKey, e.Message.TrimEnd('.')));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Bad(TlsPathKey, path, "cannot be read: " + e.Message);
        }

        if (!certificate.HasPrivateKey)
        {
            certificate.Dispose();
            throw Bad(TlsPathKey, path, "holds no private key: the server needs the certificate's key too.");
        }

        return certificate;
    }

    /// <summary>The server's options from these settings.</summary>
    public void Configure(EpollSharpServerOptions server)
    {
        if (!Systemd)
        {
            server.Endpoints.Add(new IPEndPoint(IPAddress.Parse(Host), Port).ToString());
        }

        server.SocketActivation = Systemd;
        server.Loops = Loops;
        server.Backend = Backend;
        server.TriggerMode = Trigger;
        server.AcceptMode = ParseAcceptMode();
        server.MaxConnections = MaxConnections;
        server.IdleTimeout = IdleTimeout == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(IdleTimeout);
        server.DrainTimeout = TimeSpan.FromSeconds(DrainTimeout);
        server.CallbackBudget = CallbackBudget == 0 ? null : TimeSpan.FromMilliseconds(CallbackBudget);
    }

    /// <summary>What <c>--help</c> prints: every flag with its configuration key and environment variable.</summary>
    public static string Help()
    {
        var text = new StringBuilder();
        text.AppendLine("usage: EchoServer [--host 127.0.0.1] [--port 8080] [--backend auto|epoll|io_uring|kqueue|managed] [--loops N] [--trigger level|edge]");
        text.AppendLine("                  [--accept-mode auto|reuseport|acceptor] [--max-connections N] [--idle-timeout SECONDS] [--drain-timeout SECONDS]");
        text.AppendLine("                  [--systemd] [--callback-budget MS] [--api callback|pipe|stream] [--tls PATH.pfx [--tls-password PASSWORD]]");
        text.AppendLine("                  [--pipe-continuations loop|pool] [--help]");
        text.AppendLine();
        text.AppendLine("An echo server on EpollSharp's event loops, run by the .NET Generic Host. Each option is a setting of the");
        text.AppendLine("configuration section \"" + SectionName + "\", read from (later ones win) appsettings.json next to the executable,");
        text.AppendLine("appsettings.{Environment}.json, environment variables and the command line (the flag, or --" + SectionName + ":Key=value).");
        text.AppendLine("--contentRoot DIR reads the appsettings files from DIR instead; --environment NAME picks appsettings.NAME.json.");
        text.AppendLine();
        text.AppendLine(string.Format(CultureInfo.InvariantCulture, "  {0,-38} {1,-27} {2,-29} {3,-9} {4}", "option", "configuration key", "environment variable", "default", "meaning"));
        foreach (var flag in s_flags)
        {
            string option = flag.Value.Length == 0 ? flag.Flag : flag.Flag + " " + flag.Value;
            text.AppendLine(string.Format(CultureInfo.InvariantCulture, "  {0,-38} {1,-27} {2,-29} {3,-9} {4}", option, SectionName + ":" + flag.Key, SectionName + "__" + flag.Key.Replace(":", "__", StringComparison.Ordinal), flag.Default, flag.Meaning));
        }

        text.AppendLine();
        text.AppendLine("--api: callback (default) writes back in OnReceived; pipe runs a PipeConnectionHandler whose application copies");
        text.AppendLine("Transport.Input to Transport.Output (ReadAsync, write, AdvanceTo, FlushAsync); stream does the same through");
        text.AppendLine("PipeConnection.AsStream() with a pooled buffer. Both run their continuations on the loops, or with --pipe-continuations pool");
        text.AppendLine("on the thread pool (PipeConnectionOptions.RunContinuationsOnLoop = false; the ready line then adds ' continuations=pool'). --tls serves TLS on the pipe");
        text.AppendLine("layer, so it needs pipe or stream (pipe when --api is not given; --api callback with --tls is an error). A missing");
        text.AppendLine("file or a wrong password ends the program with exit code 2. In pipe and stream mode the handler is the library's");
        text.AppendLine("(sealed), so the 'accept paused/resumed' lines are not printed; the library logs AcceptPaused as a warning on stderr.");
        text.AppendLine();
        text.AppendLine("Logging: the Logging section (Logging__LogLevel__Default=Information shows the server's start and stop); logs go to stderr.");
        text.AppendLine("Prints 'listening on HOST:PORT backend=B loops=N' when ready (followed by ' api=pipe' or ' api=stream', and ' tls=on',");
        text.Append("when so) and, after SIGTERM or SIGINT, 'stats: connections=N bytes=N allocated=N' (bytes: the application bytes echoed).");
        return text.ToString();
    }

    public static string ApiName(EchoApi api) => api switch
    {
        EchoApi.Pipe => "pipe",
        EchoApi.Stream => "stream",
        _ => "callback",
    };

    public static string BackendName(EventLoopBackend backend) => backend switch
    {
        EventLoopBackend.Epoll => "epoll",
        EventLoopBackend.Kqueue => "kqueue",
        EventLoopBackend.Managed => "managed",
        EventLoopBackend.IoUring => "io_uring",
        _ => "auto",
    };

    private GroupAcceptMode ParseAcceptMode() => AcceptMode.ToLowerInvariant() switch
    {
        "auto" => GroupAcceptMode.Auto,
        "reuseport" => GroupAcceptMode.ReusePort,
        "acceptor" or "singleacceptor" => GroupAcceptMode.SingleAcceptor,
        _ => throw Bad(nameof(AcceptMode), AcceptMode, "is not one of auto, reuseport, acceptor."),
    };

    private bool ParseContinuations() => (PipeContinuations ?? "").Trim().ToLowerInvariant() switch
    {
        "" or "loop" => true,
        "pool" => false,
        _ => throw Bad(nameof(PipeContinuations), PipeContinuations!, "is not one of loop, pool."),
    };

    private EchoApi ParseApi() => (Api ?? "").Trim().ToLowerInvariant() switch
    {
        "" => TlsEnabled ? EchoApi.Pipe : EchoApi.Callback,
        "callback" => EchoApi.Callback,
        "pipe" => EchoApi.Pipe,
        "stream" => EchoApi.Stream,
        _ => throw Bad(nameof(Api), Api!, "is not one of callback, pipe, stream."),
    };

    private static void Range(string key, int value, int min, int max)
    {
        if (value < min || value > max)
        {
            throw Bad(key, value, string.Format(CultureInfo.InvariantCulture, "is not a whole number from {0} to {1}.", min, max));
        }
    }

    private static ArgumentException Bad(string key, object value, string problem)
    {
        string flag = Array.Find(s_flags, f => f.Key == key).Flag;
        return new ArgumentException(string.Format(CultureInfo.InvariantCulture, "{0} ({1}:{2}): '{3}' {4}", flag, SectionName, key, value, problem));
    }
}

/// <summary>The settings of <c>--tls</c>: the configuration section <c>EchoServer:Tls</c>.</summary>
internal sealed class TlsSettings
{
    /// <summary>A PKCS#12 (.pfx) file with the certificate and its private key; null or empty: no TLS.</summary>
    public string? Path { get; set; }

    /// <summary>The file's password; null for none.</summary>
    public string? Password { get; set; }
}

/// <summary>How the echo server serves its connections (<c>--api</c>).</summary>
internal enum EchoApi
{
    /// <summary><see cref="EchoHandler"/>: callbacks on the loop.</summary>
    Callback,

    /// <summary><see cref="PipeEcho"/>'s pipe loop over <see cref="PipeConnection.Transport"/>.</summary>
    Pipe,

    /// <summary><see cref="PipeEcho"/>'s loop over <see cref="PipeConnection.AsStream"/>.</summary>
    Stream,
}
