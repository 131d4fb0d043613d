using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp;
using EpollSharp.Connections;

namespace Snippets;

/// <summary>
/// Dialing out, Unix domain sockets and IPv6 (docs/articles/dialing-out.md). Each method runs on 127.0.0.1, ::1 or a
/// temporary Unix socket path, against a listener of this library or a plain socket, and checks what it shows.
/// </summary>
internal static class DialingOut
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>The callback form: Connect returns at once; the handler hears of the connection or of the failure.</summary>
    public static void RunCallback()
    {
        using var loop = new EventLoop();
        using var server = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        Task stopped = loop.Start();
        var greeter = new Greeter();

        #region connect-callback
        Connection.Connect(loop, server.LocalEndPoint, greeter, userState: "hello, server");   // returns at once
        #endregion

        Program.Check(greeter.Done.Task.Wait(Limit), "the dialed connection got its echo");
        Console.WriteLine(greeter.Done.Task.Result);
        Program.Check(greeter.Done.Task.Result == "echoed: hello, server", "the echo is the greeting");

        var nobody = new Greeter();
        var closed = new IPEndPoint(IPAddress.Loopback, ClosedPort());
        Connection.Connect(loop, closed, nobody, userState: "anyone there?");
        Program.Check(nobody.Done.Task.Wait(Limit), "the failure was reported");
        Console.WriteLine(nobody.Done.Task.Result);
        Program.Check(nobody.Done.Task.Result == $"failed: Refused (ConnectionRefused), last address {closed}, user state anyone there?", "a closed port is refused");

        loop.Stop();
        stopped.Wait();
    }

    /// <summary>The task form: ConnectAsync with a token, its ConnectException, and a write posted to the loop.</summary>
    public static void RunAsync() => RunAsyncCore().GetAwaiter().GetResult();

    private static async Task RunAsyncCore()
    {
        using var loop = new EventLoop();
        using var server = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        Task stopped = loop.Start();
        EndPoint endPoint = server.LocalEndPoint;

        #region connect-async
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        var handler = new Greeter();
        Connection connection = await Connection.ConnectAsync(loop, endPoint, handler, cancellationToken: cts.Token);

        // Here we are on the thread pool (the task never continues inline on the loop thread), so the connection's
        // methods are called on its loop, with Post.
        connection.Loop.Post(() => handler.Send(connection, "ping"));
        Console.WriteLine(await handler.Done.Task);
        #endregion
        Program.Check(handler.Done.Task.Result == "echoed: ping", "the echo of the posted write");

        ConnectFailureReason? reason = null;
        int port = ClosedPort();
        #region connect-async-failure
        try
        {
            await Connection.ConnectAsync(loop, new IPEndPoint(IPAddress.Loopback, port), new Greeter());
        }
        catch (ConnectException e)   // a SocketException: SocketErrorCode is the error, Reason and Failure say more
        {
            Console.WriteLine($"{e.Reason} ({e.SocketErrorCode}), last address {e.Failure.LastAddress}");
            reason = e.Reason;
        }
        #endregion
        Program.Check(reason == ConnectFailureReason.Refused, "ConnectAsync to a closed port faults with Refused");

        loop.Stop();
        await stopped;
    }

    /// <summary>A connect that stays in progress on loopback: it times out, or is canceled.</summary>
    public static void RunTimeout() => RunTimeoutCore().GetAwaiter().GetResult();

    private static async Task RunTimeoutCore()
    {
        using var loop = new EventLoop();
        Task stopped = loop.Start();

        #region full-queue
        // A listener with backlog 0 that never accepts, and two clients in its queue: Linux drops the SYN of any further
        // client while the accept queue is full, so a connect to it stays in progress (SYN-SENT, retransmitting).
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(0);
        using var filler1 = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        using var filler2 = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        foreach (Socket filler in new[] { filler1, filler2 })
        {
            try
            {
                filler.Connect(listener.LocalEndPoint!);
            }
            catch (SocketException)
            {
                // In progress (EINPROGRESS): fine, it is queued or retrying.
            }
        }

        Thread.Sleep(100);
        #endregion

        var watch = Stopwatch.StartNew();
        ConnectFailureReason? reason = null;
        #region connect-timeout
        var options = new ConnectOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) };   // default 10 s
        try
        {
            await Connection.ConnectAsync(loop, listener.LocalEndPoint!, new Greeter(), options);
        }
        catch (ConnectException e) when (e.Reason == ConnectFailureReason.TimedOut)
        {
            Console.WriteLine($"timed out ({e.SocketErrorCode}) after {watch.ElapsedMilliseconds} ms");
            reason = e.Reason;
        }
        #endregion
        Program.Check(reason == ConnectFailureReason.TimedOut && watch.ElapsedMilliseconds >= 250, "the connect timed out after 300 ms");

        bool canceled = false;
        #region connect-cancel
        using var cancel = new CancellationTokenSource();
        Task<Connection> pending = Connection.ConnectAsync(loop, listener.LocalEndPoint!, new Greeter(), cancellationToken: cancel.Token);
        cancel.CancelAfter(TimeSpan.FromMilliseconds(50));
        try
        {
            await pending;
        }
        catch (OperationCanceledException)   // the task is canceled; the callback form reports ConnectFailureReason.Canceled
        {
            canceled = true;
        }
        #endregion
        Program.Check(canceled && pending.IsCanceled, "the pending connect was canceled");
        Program.Check(loop.RegistrationCount == 0, "nothing of the attempts is left on the loop");

        loop.Stop();
        await stopped;
    }

    /// <summary>A DnsEndPoint: resolved on the thread pool, its addresses tried in order.</summary>
    public static void RunDns() => RunDnsCore().GetAwaiter().GetResult();

    private static async Task RunDnsCore()
    {
        using var loop = new EventLoop();
        using var server = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        Task stopped = loop.Start();
        int port = ((IPEndPoint)server.LocalEndPoint).Port;

        #region connect-dns
        // "localhost" may resolve to ::1 and 127.0.0.1; the server listens on 127.0.0.1 only. Where ::1 comes first, its
        // connect is refused and the next address is tried.
        Connection connection = await Connection.ConnectAsync(loop, new DnsEndPoint("localhost", port), new Greeter());
        Console.WriteLine($"connected to {connection.RemoteEndPoint}");
        #endregion
        Program.Check(new IPEndPoint(IPAddress.Loopback, port).Equals(connection.RemoteEndPoint), "connected to 127.0.0.1");
        loop.Post(() => connection.Close());

        ConnectFailureReason? reason = null;
        try
        {
            await Connection.ConnectAsync(loop, new DnsEndPoint("nonexistent.invalid", port), new Greeter());
        }
        catch (ConnectException e)
        {
            reason = e.Reason;
        }

        Program.Check(reason == ConnectFailureReason.NameNotFound, "a name that does not resolve fails with NameNotFound");
        loop.Stop();
        await stopped;
    }

    /// <summary>Unix domain sockets: a path (its mode, the file removed at stop), an abstract name, something else at the path.</summary>
    public static void RunUnix() => RunUnixCore().GetAwaiter().GetResult();

    private static async Task RunUnixCore()
    {
        using var loop = new EventLoop();
        Task stopped = loop.Start();
        string path = Path.Combine(Path.GetTempPath(), "snippet-" + Guid.NewGuid().ToString("N").Substring(0, 8) + ".sock");
        try
        {
            #region unix-listen
            var options = new ListenerOptions
            {
                // Only this user may connect (connecting needs write permission on the file). Linux only: elsewhere
                // setting it makes Listen throw PlatformNotSupportedException.
                UnixSocketMode = OperatingSystem.IsLinux() ? Convert.ToInt32("600", 8) : null,
            };
            using var server = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), new Echo(), options);
            #endregion

            #region unix-dial
            var handler = new Greeter();
            Connection connection = await Connection.ConnectAsync(loop, new UnixDomainSocketEndPoint(path), handler);
            connection.Loop.Post(() => handler.Send(connection, "over a Unix socket"));
            #endregion
            Program.Check(await handler.Done.Task.WaitAsync(Limit) == "echoed: over a Unix socket", "the echo over the Unix socket");
            if (OperatingSystem.IsLinux())
            {
                UnixFileMode mode = File.GetUnixFileMode(path);
                Console.WriteLine($"{path}: {mode}");
                Program.Check(mode == (UnixFileMode.UserRead | UnixFileMode.UserWrite), "the socket file has mode 600");
            }

            server.Dispose();
            if (OperatingSystem.IsLinux())
            {
                Program.Check(WaitFor(() => !File.Exists(path)), "the listener removed its socket file when it stopped");
            }
        }
        finally
        {
            File.Delete(path);
        }

        if (OperatingSystem.IsLinux())
        {
            #region unix-abstract
            // Linux: a name that starts with NUL is abstract: no file, no permissions, gone with the socket.
            var name = new UnixDomainSocketEndPoint("\0snippets-" + Environment.ProcessId);
            using var server = ConnectionListener.Listen(loop, name, new Echo());
            Connection connection = await Connection.ConnectAsync(loop, name, new Greeter());
            #endregion
            Program.Check(connection.RemoteEndPoint is not null, "connected to the abstract name");
            loop.Post(() => connection.Close());

            bool refused = false;
            File.WriteAllText(path, "not a socket");
            try
            {
                #region unix-not-a-socket
                try
                {
                    ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), new Echo());
                }
                catch (IOException e)   // a regular file, a directory, a link: never removed
                {
                    Console.WriteLine(e.Message);
                    refused = true;
                }
                #endregion
                Program.Check(refused && File.ReadAllText(path) == "not a socket", "the regular file was refused and left as it was");
            }
            finally
            {
                File.Delete(path);
            }
        }

        loop.Stop();
        await stopped;
    }

    /// <summary>IPv6: a dual-mode listener takes IPv4 and IPv6 clients; DualMode = false takes IPv6 only.</summary>
    public static void RunIpv6() => RunIpv6Core().GetAwaiter().GetResult();

    private static async Task RunIpv6Core()
    {
        if (!Socket.OSSupportsIPv6)
        {
            Console.WriteLine("no IPv6 here: nothing to show");
            return;
        }

        using var loop = new EventLoop();
        Task stopped = loop.Start();

        #region dual-mode
        // IPv6Any with DualMode (the default): IPv4 clients too, seen as ::ffff:127.0.0.1.
        using var both = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), new Echo());
        int port = ((IPEndPoint)both.LocalEndPoint).Port;
        Connection overIpv4 = await Connection.ConnectAsync(loop, new IPEndPoint(IPAddress.Loopback, port), new Greeter());
        Connection overIpv6 = await Connection.ConnectAsync(loop, new IPEndPoint(IPAddress.IPv6Loopback, port), new Greeter());
        #endregion
        Program.Check(overIpv4.RemoteEndPoint is IPEndPoint { AddressFamily: AddressFamily.InterNetwork }, "the IPv4 client connected");
        Program.Check(overIpv6.RemoteEndPoint is IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 }, "the IPv6 client connected");
        Program.Check(WaitFor(() => both.AcceptedCount == 2), "the dual-mode listener accepted both");

        ConnectFailureReason? reason = null;
        #region ipv6-only
        // DualMode = false: IPV6_V6ONLY, so IPv4 clients are refused, and an IPv4 listener may take the same port.
        using var v6 = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.IPv6Any, 0), new Echo(), new ListenerOptions { DualMode = false });
        int v6Port = ((IPEndPoint)v6.LocalEndPoint).Port;
        using var v4 = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Any, v6Port), new Echo());
        #endregion
        v4.Dispose();
        try
        {
            await Connection.ConnectAsync(loop, new IPEndPoint(IPAddress.Loopback, v6Port), new Greeter());
        }
        catch (ConnectException e)
        {
            reason = e.Reason;
        }

        Program.Check(reason == ConnectFailureReason.Refused, "with DualMode off (and the IPv4 listener gone) an IPv4 client is refused");
        loop.Post(() =>
        {
            overIpv4.Close();
            overIpv6.Close();
        });
        loop.Stop();
        await stopped;
    }

    /// <summary>Address in use, and sharing a port on purpose with ReusePort.</summary>
    public static void RunAddressInUse()
    {
        using var loop = new EventLoop();

        SocketError? error = null;
        #region address-in-use
        using var first = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        try
        {
            ConnectionListener.Listen(loop, first.LocalEndPoint, new Echo());
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            Console.WriteLine($"{first.LocalEndPoint} is taken");
            error = e.SocketErrorCode;
        }
        #endregion
        Program.Check(error == SocketError.AddressAlreadyInUse, "a second listener on the port fails with address-in-use");

        if (OperatingSystem.IsLinux())
        {
            #region reuse-port
            // Both ask for SO_REUSEPORT: they share the port and the kernel spreads new connections between them. So can
            // any other process of this user that sets the option: a second copy started by mistake takes a share silently.
            var shared = new ListenerOptions { ReusePort = true };
            using var a = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo(), shared);
            using var b = ConnectionListener.Listen(loop, a.LocalEndPoint, new Echo(), shared);
            #endregion
            Program.Check(a.LocalEndPoint.Equals(b.LocalEndPoint), "both listeners hold the port");
        }
    }

    /// <summary>A listener on a socket the caller opened, and on the sockets of socket activation when there are any.</summary>
    public static void RunOwnSocket() => RunOwnSocketCore().GetAwaiter().GetResult();

    private static async Task RunOwnSocketCore()
    {
        using var loop = new EventLoop();
        Task stopped = loop.Start();

        #region listen-on-socket
        // A socket with an option the library does not set, bound by the caller; the listener takes it over.
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReceiveBuffer, 64 * 1024);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var server = ConnectionListener.ListenOnSocket(loop, socket, new Echo());   // listen(), non-blocking, closed at stop
        #endregion

        var greeter = new Greeter();
        Connection connection = await Connection.ConnectAsync(loop, server.LocalEndPoint, greeter);
        connection.Loop.Post(() => greeter.Send(connection, "own socket"));
        Program.Check(await greeter.Done.Task.WaitAsync(Limit) == "echoed: own socket", "the echo through the caller's socket");
        server.Dispose();
        Program.Check(WaitFor(() => socket.SafeHandle.IsClosed), "the listener closed the socket it took");

        #region socket-activation
        // Under systemd (or systemd-socket-activate), the sockets it opened for this process; elsewhere none.
        IReadOnlyList<ActivatedSocket> passed = OperatingSystem.IsLinux() ? SocketActivation.TakeSockets() : Array.Empty<ActivatedSocket>();
        using ConnectionListener listener = passed.Count > 0
            ? ConnectionListener.ListenOnSocket(loop, passed[0].Socket, new Echo())
            : ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        Console.WriteLine($"listening on {listener.LocalEndPoint} ({(passed.Count > 0 ? "socket activation, " + passed[0].Name : "bound here")})");
        #endregion

        Program.Check(passed.Count == 0, "the snippet runs without socket activation");
        loop.Stop();
        await stopped;
    }

    /// <summary>Socket options for dialed and accepted connections; TCP's own options are skipped on a Unix socket.</summary>
    public static void RunOptions() => RunOptionsCore().GetAwaiter().GetResult();

    private static async Task RunOptionsCore()
    {
        using var loop = new EventLoop();
        Task stopped = loop.Start();
        string path = Path.Combine(Path.GetTempPath(), "snippet-" + Guid.NewGuid().ToString("N").Substring(0, 8) + ".sock");
        try
        {
            #region socket-options
            var connectionOptions = new ConnectionOptions
            {
                NoDelay = true,                                   // TCP_NODELAY (the default)
                KeepAlive = true,                                 // SO_KEEPALIVE
                KeepAliveTime = TimeSpan.FromSeconds(60),         // TCP_KEEPIDLE: silence before the first probe
                KeepAliveInterval = TimeSpan.FromSeconds(10),     // TCP_KEEPINTVL: between unanswered probes
                KeepAliveRetryCount = 5,                          // TCP_KEEPCNT: unanswered probes before the reset
                SocketSendBufferSize = 256 * 1024,                // SO_SNDBUF (a request: capped and doubled by Linux)
                SocketReceiveBufferSize = 256 * 1024,             // SO_RCVBUF
                Linger = TimeSpan.FromSeconds(2),                 // SO_LINGER: close waits (on the loop thread!) for the peer's ACK
            };
            using var server = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo(),
                new ListenerOptions { Connection = connectionOptions });               // accepted connections
            var dialOptions = new ConnectOptions { Connection = connectionOptions };   // dialed ones
            #endregion

            var tcp = new Greeter();
            Connection overTcp = await Connection.ConnectAsync(loop, server.LocalEndPoint, tcp, dialOptions);
            overTcp.Loop.Post(() => tcp.Send(overTcp, "tcp"));
            Program.Check(await tcp.Done.Task.WaitAsync(Limit) == "echoed: tcp", "the echo over TCP with every option");

            // The same options on a Unix socket: NoDelay and the keep-alive timings are TCP's own and are not applied, so
            // no failure is reported for them.
            using var unixServer = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), new Echo(),
                new ListenerOptions { Connection = connectionOptions });
            var unix = new Greeter();
            Connection overUnix = await Connection.ConnectAsync(loop, new UnixDomainSocketEndPoint(path), unix, dialOptions);
            overUnix.Loop.Post(() => unix.Send(overUnix, "unix"));
            Program.Check(await unix.Done.Task.WaitAsync(Limit) == "echoed: unix", "the echo over the Unix socket with the same options");

            Console.WriteLine($"option failures: tcp {tcp.OptionFailures}, unix {unix.OptionFailures}");
            Program.Check(tcp.OptionFailures == 0 && unix.OptionFailures == 0, "no option failed, and none was tried that the Unix socket lacks");
            await server.ShutdownAsync(Limit);
        }
        finally
        {
            File.Delete(path);
        }

        loop.Stop();
        await stopped;
    }

    #region greeter
    // One handler serves the connection once it is made, and hears of a failure: exactly one of OnConnected and
    // OnConnectFailed is called per Connect, on the loop thread.
    private sealed class Greeter : ConnectionHandler
    {
        private readonly StringBuilder _received = new();
        private int _expected;

        public TaskCompletionSource<string> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void OnConnected(Connection connection)
        {
            if (connection.UserState is string greeting)   // the userState given to Connect
            {
                Send(connection, greeting);
            }
        }

        public void Send(Connection connection, string text)
        {
            _expected += text.Length;
            connection.Write(Encoding.ASCII.GetBytes(text));
        }

        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
        {
            _received.Append(Encoding.ASCII.GetString(data));
            if (_received.Length >= _expected)
            {
                Done.TrySetResult("echoed: " + _received);
                connection.Close();
            }
        }

        public override void OnConnectFailed(ConnectFailure failure) =>
            Done.TrySetResult($"failed: {failure.Reason} ({failure.SocketError}), last address {failure.LastAddress}, user state {failure.UserState}");

        public int OptionFailures;

        #region option-failed
        // An option the kernel refused: the connection carries on without it. Log it, or Abort a connection that
        // must not run without it.
        public override void OnSocketOptionFailed(Connection connection, string option, SocketError error)
        {
            Console.WriteLine($"connection {connection.Id}: {option} failed with {error}");
            Interlocked.Increment(ref OptionFailures);
        }
        #endregion
    }
    #endregion

    private sealed class Echo : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
    }

    private static int ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private static bool WaitFor(Func<bool> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > Limit)
            {
                return false;
            }

            Thread.Sleep(5);
        }

        return true;
    }
}
