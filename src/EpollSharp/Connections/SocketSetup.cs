using System;
using System.Net;
using System.Net.Sockets;
using EpollSharp.Native;

namespace EpollSharp.Connections;

/// <summary>How a listening socket shares its port through <c>SO_REUSEPORT</c>.</summary>
internal enum PortSharing
{
    /// <summary>No sharing: binding an address in use fails with address-in-use.</summary>
    None,

    /// <summary>
    /// The first socket of a group: bound without <c>SO_REUSEPORT</c>, so that binding fails with address-in-use when
    /// anyone already listens there (with or without the option), then given the option before <c>listen</c> so that the
    /// group's other sockets can join it.
    /// </summary>
    Lead,

    /// <summary><c>SO_REUSEPORT</c> before binding: joins (or starts) a group of sockets on the port, the user's explicit choice.</summary>
    Join,
}

/// <summary>Creates listening sockets, and applies the per-connection options to accepted ones.</summary>
internal static partial class SocketSetup
{
    /// <summary>
    /// Creates, configures, binds and starts listening; non-blocking. Throws (and closes the socket) on failure.
    /// <paramref name="file"/> is the socket file created for a Unix domain socket path, to be removed when the listener stops.
    /// </summary>
    internal static Socket CreateListener(EndPoint endPoint, ListenerOptions options, PortSharing sharing, out UnixSocketFile? file)
    {
        file = null;
        bool isIp = endPoint is IPEndPoint;
        string? unixPath = endPoint.AddressFamily == AddressFamily.Unix ? UnixSocketFile.PathOf(endPoint) : null;
        if (options.UnixSocketMode is not null && unixPath is null)
        {
            throw new ArgumentException(
                "ListenerOptions.UnixSocketMode applies to a Unix domain socket bound to a file-system path; a " + endPoint.AddressFamily + " endpoint" + (endPoint.AddressFamily == AddressFamily.Unix ? " with an abstract name" : string.Empty) + " has no file.",
                nameof(endPoint));
        }

        if (sharing != PortSharing.None)
        {
            if (!Platform.IsLinux)
            {
                throw new PlatformNotSupportedException("SO_REUSEPORT with load balancing is supported on Linux only; set ListenerOptions.ReusePort = false, or use one acceptor (GroupAcceptMode.SingleAcceptor).");
            }

            if (!isIp)
            {
                throw new ArgumentException(
                    "ReusePort (ListenerOptions.ReusePort, GroupAcceptMode.ReusePort) applies to IP endpoints only; a " + endPoint.AddressFamily + " socket cannot share its address. Use GroupAcceptMode.SingleAcceptor.",
                    nameof(endPoint));
            }
        }

        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, isIp ? ProtocolType.Tcp : ProtocolType.Unspecified);
        try
        {
            // SO_REUSEADDR alone, set as a raw option: .NET's SocketOptionName.ReuseAddress also sets SO_REUSEPORT on
            // Unix, which would let a second server bind the same address and take part of the traffic.
            if (options.ReuseAddress && isIp && !Platform.IsWindows)
            {
                SetFlag(socket, SocketConstants.SoReuseAddr);
            }

            if (sharing == PortSharing.Join)
            {
                SetFlag(socket, SocketConstants.SoReusePort);
            }

            // IPV6_V6ONLY, both ways, so that the system's default (net.ipv6.bindv6only) does not decide.
            if (endPoint is IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } ip && ip.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = options.DualMode;
            }

            if (unixPath is not null)
            {
                UnixSocketFile.RemoveIfStale(endPoint, unixPath);
            }

            socket.Bind(unixPath is null ? endPoint : UnixSocketFile.ForBind(endPoint));
            if (unixPath is not null)
            {
                // Before listen: until then a client cannot connect, whatever the mode the file was created with.
                if (options.UnixSocketMode is int mode)
                {
                    try
                    {
                        UnixSocketFile.SetMode(unixPath, mode);
                    }
                    catch
                    {
                        UnixSocketFile.AfterBind(unixPath)?.DeleteIfSame();
                        throw;
                    }
                }

                file = UnixSocketFile.AfterBind(unixPath);
            }

            if (sharing == PortSharing.Lead)
            {
                SetFlag(socket, SocketConstants.SoReusePort);
            }

            socket.Listen(options.Backlog);
            socket.Blocking = false;
            return socket;
        }
        catch
        {
            socket.Dispose();
            file?.DeleteIfSame();
            file = null;
            throw;
        }
    }

    /// <summary>
    /// Readies a socket the caller opened for accepting: checks it, calls <c>listen</c> unless it listens already, and makes
    /// it non-blocking. Throws without closing it (the caller closes it).
    /// </summary>
    internal static void AdoptListener(Socket socket, ListenerOptions options)
    {
        // First, as it throws ObjectDisposedException for a closed socket.
        bool listening = IsListening(socket);
        if (socket.SocketType != SocketType.Stream)
        {
            throw new ArgumentException("A listener needs a stream socket (SocketType.Stream); this one is " + socket.SocketType + ".", nameof(socket));
        }

        if (options.ReusePort)
        {
            throw new ArgumentException("ListenerOptions.ReusePort applies when the listener binds the socket; this socket is bound already. Set SO_REUSEPORT on it before binding it.", nameof(options));
        }

        if (options.UnixSocketMode is not null)
        {
            throw new ArgumentException("ListenerOptions.UnixSocketMode applies when the listener binds the socket; this socket is bound already. Set the socket file's mode after binding it.", nameof(options));
        }

        if (!listening)
        {
            if (!IsBound(socket))
            {
                // listen() would bind a TCP socket to a random port on the any-address: never what the caller meant.
                throw new ArgumentException("The socket is neither listening nor bound: bind it first (Socket.Bind), or give ConnectionListener.Listen an endpoint.", nameof(socket));
            }

            socket.Listen(options.Backlog);
        }

        socket.Blocking = false;
    }

    /// <summary>Whether <paramref name="socket"/> is in the listening state (<c>SO_ACCEPTCONN</c>).</summary>
    private static bool IsListening(Socket socket) =>
        socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection) is int value && value != 0;

    /// <summary>Whether <paramref name="socket"/> has an address of its own: a port other than 0, or a Unix socket name.</summary>
    private static bool IsBound(Socket socket) => socket.LocalEndPoint switch
    {
        null => false,
        IPEndPoint ip => ip.Port != 0,
        EndPoint other when other.AddressFamily == AddressFamily.Unix => other.ToString()?.Length > 0,
        _ => true,
    };

    /// <summary>Whether options that only TCP has (no-delay, keep-alive timings) apply to <paramref name="socket"/>.</summary>
    internal static bool IsTcp(Socket socket) => socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6;

    /// <summary>The <c>SOL_SOCKET</c> numbers of this system (Linux's, or those of macOS and FreeBSD).</summary>
    private static class SocketConstants
    {
        internal static readonly int SolSocket = Platform.IsLinux ? Interop.SocketOptions.SOL_SOCKET : Interop.SocketOptions.Bsd.SOL_SOCKET;
        internal static readonly int SoReuseAddr = Platform.IsLinux ? Interop.SocketOptions.SO_REUSEADDR : Interop.SocketOptions.Bsd.SO_REUSEADDR;
        internal static readonly int SoReusePort = Platform.IsLinux ? Interop.SocketOptions.SO_REUSEPORT : Interop.SocketOptions.Bsd.SO_REUSEPORT;
    }
}
