using System;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace EpollSharp.Hosting;

/// <summary>Reads the endpoint strings of <see cref="EpollSharpServerOptions.Endpoints"/>.</summary>
internal static class EndpointParser
{
    public const string UnixPrefix = "unix:";

    public const string Forms = "an IP address and port (127.0.0.1:8080, [::]:8080) or a Unix socket (unix:/path/to.sock, unix:@abstract-name)";

    /// <summary>Parses <paramref name="text"/>; on failure <paramref name="error"/> says why.</summary>
    public static bool TryParse(string? text, out EndPoint? endPoint, out string? error)
    {
        endPoint = null;
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "is empty; it must be " + Forms;
            return false;
        }

        string value = text!.Trim();
        if (value.StartsWith(UnixPrefix, StringComparison.OrdinalIgnoreCase))
        {
            string path = value.Substring(UnixPrefix.Length);
            if (path.Length == 0 || path == "@")
            {
                error = "'" + text + "' names no socket after 'unix:'";
                return false;
            }

            // '@' marks Linux's abstract namespace, as ss(8) and systemd write it: the name starts with a NUL byte.
            string name = path[0] == '@' ? "\0" + path.Substring(1) : path;
            try
            {
                endPoint = new UnixDomainSocketEndPoint(name);
                return true;
            }
            catch (ArgumentException e)
            {
                error = "'" + text + "' is not a usable Unix socket name: " + e.Message;
                return false;
            }
        }

        // A port is required: IPEndPoint.TryParse alone takes "127.0.0.1" as port 0.
        int colon = value.LastIndexOf(':');
        bool hasPort = value.StartsWith("[", StringComparison.Ordinal) ? value.IndexOf("]:", StringComparison.Ordinal) > 0 : colon > 0 && value.IndexOf(':') == colon;
        if (!hasPort || !IPEndPoint.TryParse(value, out IPEndPoint? ip)
            || !int.TryParse(value.Substring(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _))
        {
            error = "'" + text + "' is not " + Forms;
            return false;
        }

        endPoint = ip;
        return true;
    }

    /// <summary>The endpoint as configuration writes it (the inverse of <see cref="TryParse"/>).</summary>
    public static string Format(EndPoint? endPoint) => endPoint switch
    {
        null => "(none)",
        UnixDomainSocketEndPoint unix => Unix(unix.ToString()),
        _ => endPoint.ToString() ?? "(unknown)",
    };

    private static string Unix(string path) => UnixPrefix + (path.Length > 0 && path[0] == '\0' ? "@" + path.Substring(1) : path);
}
