using System;
using System.Collections.Generic;
using System.Globalization;
using System.Net.Sockets;
using EpollSharp.Native;

namespace EpollSharp.Connections;

/// <summary>
/// Socket activation: takes the listening sockets that systemd (or any launcher that speaks its protocol, such as
/// <c>systemd-socket-activate</c>) opened for this process and passed as descriptors 3 and up, with the
/// <c>LISTEN_PID</c>, <c>LISTEN_FDS</c> and <c>LISTEN_FDNAMES</c> environment variables (<c>sd_listen_fds(3)</c>).
/// Hand each socket to <see cref="ConnectionListener.ListenOnSocket"/>
/// or <see cref="EventLoopGroup.ListenOnSocket"/>.
/// </summary>
/// <remarks>
/// The sockets are bound and listening already, with the options the socket unit gave them; connections that arrived
/// before the process started wait in their queue and are accepted as usual. Linux only.
/// </remarks>
public static partial class SocketActivation
{
    /// <summary>The first descriptor passed (<c>SD_LISTEN_FDS_START</c>); the others follow it without a gap.</summary>
    public const int FirstDescriptor = 3;

    private const string ListenPid = "LISTEN_PID";
    private const string ListenFds = "LISTEN_FDS";
    private const string ListenFdNames = "LISTEN_FDNAMES";

    /// <summary>
    /// Takes the sockets passed to this process, as <c>sd_listen_fds_with_names</c> with <c>unset_environment</c> set: it
    /// removes <c>LISTEN_PID</c>, <c>LISTEN_FDS</c> and <c>LISTEN_FDNAMES</c> from the environment (so that a second call, and
    /// the processes this one starts, find nothing), marks each descriptor close-on-exec, and wraps it in a <see cref="Socket"/>
    /// that the caller owns.
    /// </summary>
    /// <returns>The sockets in descriptor order; empty when none were passed, or when <c>LISTEN_PID</c> names another
    /// process (the variables were inherited from a parent, not meant for this one).</returns>
    /// <exception cref="PlatformNotSupportedException">Not on Linux, or the netstandard2.0 build of the library (which cannot
    /// wrap a descriptor in a <see cref="Socket"/>).</exception>
    /// <exception cref="InvalidOperationException"><c>LISTEN_PID</c> or <c>LISTEN_FDS</c> does not hold a number, or a
    /// descriptor they announce is not open or is not a socket. The sockets taken before it are closed.</exception>
    public static IReadOnlyList<ActivatedSocket> TakeSockets()
    {
        Platform.ThrowIfNotLinux("Socket activation (LISTEN_FDS)");
        ThrowIfCannotWrap();
        string? pid = Environment.GetEnvironmentVariable(ListenPid);
        string? fds = Environment.GetEnvironmentVariable(ListenFds);
        string? names = Environment.GetEnvironmentVariable(ListenFdNames);
        Environment.SetEnvironmentVariable(ListenPid, null);
        Environment.SetEnvironmentVariable(ListenFds, null);
        Environment.SetEnvironmentVariable(ListenFdNames, null);
        return Take(pid, fds, names, CurrentProcessId(), FirstDescriptor);
    }

    /// <summary>The rules of <see cref="TakeSockets"/> on given values, so that tests can pass descriptors other than 3 and up.</summary>
    internal static IReadOnlyList<ActivatedSocket> Take(string? listenPid, string? listenFds, string? listenFdNames, int processId, int firstDescriptor)
    {
        if (listenPid is null || listenFds is null)
        {
            return Array.Empty<ActivatedSocket>();
        }

        if (!int.TryParse(listenPid, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid <= 0)
        {
            throw new InvalidOperationException(ListenPid + " is '" + listenPid + "'; socket activation passes a process id there.");
        }

        if (pid != processId)
        {
            return Array.Empty<ActivatedSocket>();
        }

        if (!int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count > 65536)
        {
            throw new InvalidOperationException(ListenFds + " is '" + listenFds + "'; socket activation passes the number of descriptors there.");
        }

        string[] nameList = string.IsNullOrEmpty(listenFdNames) ? Array.Empty<string>() : listenFdNames!.Split(':');
        var taken = new List<ActivatedSocket>(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                int fd = firstDescriptor + i;
                string? name = i < nameList.Length && nameList[i].Length > 0 ? nameList[i] : null;
                string which = "descriptor " + fd.ToString(CultureInfo.InvariantCulture) + (name is null ? string.Empty : " ('" + name + "')");
                if (Interop.Sys.fcntl(fd, Interop.Sys.F_SETFD, Interop.Sys.FD_CLOEXEC) != 0)
                {
                    int errno = Interop.Errno.Last();
                    throw new InvalidOperationException(ListenFds + " announces " + count.ToString(CultureInfo.InvariantCulture) + " descriptors from " + firstDescriptor.ToString(CultureInfo.InvariantCulture) + ", but " + which + " cannot be used: " + ErrnoNames.NameOf(errno) + ".");
                }

                Socket socket;
                try
                {
                    socket = Wrap(fd);
                }
                catch (SocketException e)
                {
                    throw new InvalidOperationException(which + ", passed by socket activation, is not a socket that can be used: " + e.Message, e);
                }

                taken.Add(new ActivatedSocket(socket, name, fd));
            }
        }
        catch
        {
            foreach (ActivatedSocket socket in taken)
            {
                socket.Socket.Dispose();
            }

            throw;
        }

        return taken;
    }
}
