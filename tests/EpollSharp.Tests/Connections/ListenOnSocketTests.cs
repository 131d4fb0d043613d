using System.IO;
using System.Runtime.InteropServices;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// A listener on a socket the caller opened (<see cref="ConnectionListener.ListenOnSocket"/>,
/// <see cref="EventLoopGroup.ListenOnSocket"/>), and the sockets of socket activation (<see cref="SocketActivation"/>).
/// </summary>
public class ListenOnSocketTests
{
    private static void AssertEchoes(EndPoint endPoint, int seed)
    {
        using var client = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified) { ReceiveTimeout = 10_000 };
        client.Connect(endPoint);
        byte[] data = SocketTestExtensions.Pattern(seed, 5_000 + seed);
        client.Send(data);
        Assert.True(data.AsSpan().SequenceEqual(client.ReceiveExactly(data.Length)), "the echo matches");
        client.Shutdown(SocketShutdown.Send);
        Assert.Empty(client.ReceiveToEnd());
    }

    private static bool IsRefused(EndPoint endPoint)
    {
        using var probe = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified);
        try
        {
            probe.Connect(endPoint);
            return false;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode == SocketError.ConnectionRefused;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_bound_socket_the_caller_opened_is_listened_on_with_its_options_and_closed_at_stop(EventLoopBackend backend)
    {
        using var running = new RunningLoop(backend);
        var handler = new EchoHandler();
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReceiveBuffer, 64 * 1024);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var bound = (IPEndPoint)socket.LocalEndPoint!;

        ConnectionListener listener = ConnectionListener.ListenOnSocket(running.Loop, socket, handler);
        Assert.Equal(bound, listener.LocalEndPoint);
        Assert.False(socket.Blocking);
        Assert.NotEqual(0, (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)!);
        for (int i = 0; i < 3; i++)
        {
            AssertEchoes(bound, i);
        }

        LoopHarness.WaitUntil(() => handler.Closed == 3, "three connections close");
        Assert.Equal(3, listener.AcceptedCount);
        listener.StopAccepting();
        LoopHarness.WaitUntil(() => socket.SafeHandle.IsClosed, "the listener closes the socket it took");
        Assert.True(IsRefused(bound), "nobody listens after the stop");
        Assert.Empty(running.Errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_socket_that_listens_already_keeps_the_clients_queued_before_the_listener_started(EventLoopBackend backend)
    {
        using var running = new RunningLoop(backend);
        var handler = new EchoHandler();
        Socket socket = RunningLoop.PlainListener(backlog: 16);
        var endPoint = (IPEndPoint)socket.LocalEndPoint!;

        // As with socket activation: clients connect while nobody accepts yet; the kernel queues them.
        var early = new List<Socket>();
        for (int i = 0; i < 3; i++)
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
            client.Connect(endPoint);
            client.Send(SocketTestExtensions.Pattern(i, 100));
            early.Add(client);
        }

        using ConnectionListener listener = ConnectionListener.ListenOnSocket(running.Loop, socket, handler);
        for (int i = 0; i < early.Count; i++)
        {
            Assert.Equal(SocketTestExtensions.Pattern(i, 100), early[i].ReceiveExactly(100));
            early[i].Dispose();
        }

        AssertEchoes(endPoint, 7);
        Assert.Equal(4, listener.AcceptedCount);
        Assert.Empty(running.Errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_unix_socket_the_caller_bound_is_served_with_no_tcp_options_and_closed_at_stop(EventLoopBackend backend)
    {
        string path = UnixSocketTests.TempSocketPath();
        try
        {
            using var running = new RunningLoop(backend);
            var handler = new EchoHandler();
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(path));
            ConnectionListener listener = ConnectionListener.ListenOnSocket(running.Loop, socket, handler);
            AssertEchoes(new UnixDomainSocketEndPoint(path), 1);
            Assert.Empty(handler.OptionFailures);
            listener.Dispose();
            LoopHarness.WaitUntil(() => socket.SafeHandle.IsClosed, "the listener closes the socket");
            Assert.True(IsRefused(new UnixDomainSocketEndPoint(path)) || !File.Exists(path), "nobody listens after the stop");
            Assert.Empty(running.Errors);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_group_spreads_the_connections_of_one_socket_over_its_loops()
    {
        var handler = new EchoHandler();
        using var group = new EventLoopGroup(2);
        Socket socket = RunningLoop.PlainListener(backlog: 64);
        var endPoint = (IPEndPoint)socket.LocalEndPoint!;
        ConnectionListener listener = group.ListenOnSocket(socket, handler);
        Assert.Equal(new[] { listener }, group.Listeners);
        var clients = new List<Socket>();
        for (int i = 0; i < 6; i++)
        {
            Socket client = EchoServer.ConnectTo(endPoint);
            client.Send(new byte[] { (byte)i });
            Assert.Equal(new[] { (byte)i }, client.ReceiveExactly(1));
            clients.Add(client);
        }

        LoopHarness.WaitUntil(() => handler.Connected == 6, "six connections start");
        Assert.Equal(2, handler.Connections.Select(c => c.Loop).Distinct().Count());
        clients.ForEach(c => c.Dispose());
        Assert.True(group.ShutdownAsync(TimeSpan.FromSeconds(5)).Wait(20_000), "the group shuts down");
        Assert.True(socket.SafeHandle.IsClosed, "the group's listener closed the socket");
    }

    public static IEnumerable<object[]> BadSockets()
    {
        yield return new object[] { "unbound TCP", (Func<Socket>)(() => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)), "neither listening nor bound" };
        yield return new object[] { "UDP", (Func<Socket>)(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)), "stream socket" };
        yield return new object[] { "unbound Unix", (Func<Socket>)(() => new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)), "neither listening nor bound" };
    }

    [Theory]
    [MemberData(nameof(BadSockets))]
    public void A_socket_that_cannot_listen_is_refused_with_the_reason_and_closed(string kind, Func<Socket> create, string reason)
    {
        using var loop = new EventLoop();
        Socket socket = create();
        var e = Assert.Throws<ArgumentException>(() => ConnectionListener.ListenOnSocket(loop, socket, new EchoHandler()));
        Assert.Equal("socket", e.ParamName);
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
        Assert.True(socket.SafeHandle.IsClosed, kind + ": the socket is closed when the call throws");
        Assert.Equal(0, loop.RegistrationCount);
    }

    [Fact]
    public void Options_that_apply_at_binding_are_refused_naming_the_option()
    {
        using var loop = new EventLoop();
        Socket first = RunningLoop.PlainListener(backlog: 4);
        var e = Assert.Throws<ArgumentException>(() => ConnectionListener.ListenOnSocket(loop, first, new EchoHandler(), new ListenerOptions { ReusePort = true }));
        Assert.Equal("options", e.ParamName);
        Assert.Contains("ReusePort", e.Message, StringComparison.Ordinal);
        Assert.True(first.SafeHandle.IsClosed);

        Socket second = RunningLoop.PlainListener(backlog: 4);
        e = Assert.Throws<ArgumentException>(() => ConnectionListener.ListenOnSocket(loop, second, new EchoHandler(), new ListenerOptions { UnixSocketMode = 384 }));
        Assert.Contains("UnixSocketMode", e.Message, StringComparison.Ordinal);
        Assert.True(second.SafeHandle.IsClosed);
    }

    [Fact]
    public void Null_arguments_and_closed_sockets_are_refused()
    {
        using var loop = new EventLoop();
        Assert.Equal("socket", Assert.Throws<ArgumentNullException>(() => ConnectionListener.ListenOnSocket(loop, null!, new EchoHandler())).ParamName);

        Socket socket = RunningLoop.PlainListener(backlog: 4);
        Assert.Equal("handler", Assert.Throws<ArgumentNullException>(() => ConnectionListener.ListenOnSocket(loop, socket, null!)).ParamName);
        Assert.True(socket.SafeHandle.IsClosed, "the socket is closed when the call throws");

        Socket loopless = RunningLoop.PlainListener(backlog: 4);
        Assert.Equal("loop", Assert.Throws<ArgumentNullException>(() => ConnectionListener.ListenOnSocket(null!, loopless, new EchoHandler())).ParamName);
        Assert.True(loopless.SafeHandle.IsClosed);

        Socket closed = RunningLoop.PlainListener(backlog: 4);
        closed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => ConnectionListener.ListenOnSocket(loop, closed, new EchoHandler()));

        var disposedLoop = new EventLoop();
        disposedLoop.Dispose();
        Socket late = RunningLoop.PlainListener(backlog: 4);
        Assert.Throws<ObjectDisposedException>(() => ConnectionListener.ListenOnSocket(disposedLoop, late, new EchoHandler()));
        Assert.True(late.SafeHandle.IsClosed);

        var group = new EventLoopGroup(1);
        group.Dispose();
        Socket forGroup = RunningLoop.PlainListener(backlog: 4);
        Assert.Throws<ObjectDisposedException>(() => group.ListenOnSocket(forGroup, new EchoHandler()));
        Assert.True(forGroup.SafeHandle.IsClosed);
    }
}

/// <summary>
/// <see cref="SocketActivation"/>'s rules, on descriptors of this process: the whole protocol, in a real child process,
/// is in <see cref="SocketActivationSampleTests"/>.
/// </summary>
public class SocketActivationTests
{
    [DllImport("libc", SetLastError = true)]
    private static extern int dup2(int oldfd, int newfd);

    [DllImport("libc", SetLastError = true)]
    private static extern int close(int fd);

    private static int Me => Environment.ProcessId;

    /// <summary>The first of <paramref name="count"/> free descriptor numbers in a row, far above those in use.</summary>
    private static int FreeRun(int count)
    {
        for (int start = 1000 + Random.Shared.Next(0, 5000); ; start += count)
        {
            if (Enumerable.Range(start, count).All(fd => !Fds.IsOpen(fd)))
            {
                return start;
            }
        }
    }

    [Theory]
    [InlineData(null, "1")]
    [InlineData("1", null)]
    [InlineData("1", "0")]
    public void Nothing_is_taken_without_both_variables_or_with_no_descriptors(string? pid, string? fds)
    {
        Assert.Empty(SocketActivation.Take(pid is null ? null : Me.ToString(System.Globalization.CultureInfo.InvariantCulture), fds, null, Me, 3));
    }

    [Fact]
    public void Variables_meant_for_another_process_are_ignored()
    {
        // Inherited from a parent that was activated: LISTEN_PID names the parent, so the descriptors are not ours.
        Assert.Empty(SocketActivation.Take((Me + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), "2", null, Me, 3));
    }

    [Theory]
    [InlineData("abc", "1", "LISTEN_PID")]
    [InlineData("-5", "1", "LISTEN_PID")]
    [InlineData("MINE", "x", "LISTEN_FDS")]
    [InlineData("MINE", "-1", "LISTEN_FDS")]
    public void Values_that_are_not_numbers_are_an_error_naming_the_variable(string pid, string fds, string variable)
    {
        pid = pid == "MINE" ? Me.ToString(System.Globalization.CultureInfo.InvariantCulture) : pid;
        var e = Assert.Throws<InvalidOperationException>(() => SocketActivation.Take(pid, fds, null, Me, 3));
        Assert.StartsWith(variable + " is ", e.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_descriptor_that_is_not_open_is_an_error_naming_it()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "socket activation is Linux only");
        int fd = FreeRun(1);
        var e = Assert.Throws<InvalidOperationException>(() => SocketActivation.Take(Me.ToString(System.Globalization.CultureInfo.InvariantCulture), "1", "web", Me, fd));
        Assert.Contains("descriptor " + fd + " ('web')", e.Message, StringComparison.Ordinal);
        Assert.Contains("EBADF", e.Message, StringComparison.Ordinal);
    }

#if !EPOLLSHARP_NETSTANDARD2_0
    [SkippableFact]
    public void Listening_sockets_are_taken_with_their_names_close_on_exec_and_serve_clients()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "socket activation is Linux only");
        using Socket tcp = RunningLoop.PlainListener(backlog: 8);
        string path = UnixSocketTests.TempSocketPath();
        using var unix = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        unix.Bind(new UnixDomainSocketEndPoint(path));
        unix.Listen(8);
        int first = FreeRun(2);
        try
        {
            // As a launcher passes them: copies at consecutive descriptors, without close-on-exec.
            Assert.Equal(first, dup2((int)tcp.Handle, first));
            Assert.Equal(first + 1, dup2((int)unix.Handle, first + 1));
            Assert.Equal(0, Fds.Flags(first) & 0x80000);

            IReadOnlyList<ActivatedSocket> taken = SocketActivation.Take(Me.ToString(System.Globalization.CultureInfo.InvariantCulture), "2", "web:admin", Me, first);
            Assert.Equal(2, taken.Count);
            Assert.Equal(("web", first), (taken[0].Name, taken[0].Descriptor));
            Assert.Equal(("admin", first + 1), (taken[1].Name, taken[1].Descriptor));
            Assert.All(taken, t => Assert.NotEqual(0, Fds.Flags(t.Descriptor) & 0x80000));
            Assert.Equal(AddressFamily.InterNetwork, taken[0].Socket.AddressFamily);
            Assert.Equal(tcp.LocalEndPoint, taken[0].Socket.LocalEndPoint);
            Assert.Equal(AddressFamily.Unix, taken[1].Socket.AddressFamily);

            using var loop = new EventLoop();
            using var harness = new LoopHarness(loop);
            var handler = new EchoHandler();
            using ConnectionListener web = ConnectionListener.ListenOnSocket(loop, taken[0].Socket, handler);
            using ConnectionListener admin = ConnectionListener.ListenOnSocket(loop, taken[1].Socket, handler);
            using (Socket client = EchoServer.ConnectTo(web.LocalEndPoint))
            {
                client.Send(new byte[] { 1, 2, 3 });
                Assert.Equal(new byte[] { 1, 2, 3 }, client.ReceiveExactly(3));
            }

            using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 })
            {
                client.Connect(new UnixDomainSocketEndPoint(path));
                client.Send(new byte[] { 4, 5 });
                Assert.Equal(new byte[] { 4, 5 }, client.ReceiveExactly(2));
            }

            web.Dispose();
            admin.Dispose();
            LoopHarness.WaitUntil(() => !Fds.IsOpen(first) && !Fds.IsOpen(first + 1), "the listeners close the descriptors they took");

            // The socket file belongs to whoever bound the socket (for systemd, the socket unit): the listener leaves it.
            Assert.True(File.Exists(path), "the listener left the socket file");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [SkippableFact]
    public void A_descriptor_that_is_not_a_socket_is_an_error_and_stays_open_and_those_taken_before_it_are_closed()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "socket activation is Linux only");
        using Socket tcp = RunningLoop.PlainListener(backlog: 8);
        string file = Path.GetTempFileName();
        using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        int first = FreeRun(2);
        try
        {
            Assert.Equal(first, dup2((int)tcp.Handle, first));
            Assert.Equal(first + 1, dup2((int)stream.SafeFileHandle.DangerousGetHandle(), first + 1));
            var e = Assert.Throws<InvalidOperationException>(() => SocketActivation.Take(Me.ToString(System.Globalization.CultureInfo.InvariantCulture), "2", null, Me, first));
            Assert.Contains("descriptor " + (first + 1), e.Message, StringComparison.Ordinal);
            Assert.Contains("is not a socket", e.Message, StringComparison.Ordinal);
            Assert.False(Fds.IsOpen(first), "the socket taken before the bad descriptor is closed");
            Assert.True(Fds.IsOpen(first + 1), "a descriptor that is not a socket is left as it was passed");
        }
        finally
        {
            close(first + 1);
            File.Delete(file);
        }
    }

    [SkippableFact]
    public void TakeSockets_removes_the_variables_so_a_second_call_and_child_processes_find_nothing()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "socket activation is Linux only");
        // LISTEN_PID names another process, so no descriptor of this test process is touched.
        Environment.SetEnvironmentVariable("LISTEN_PID", (Me + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Environment.SetEnvironmentVariable("LISTEN_FDS", "1");
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", "web");
        try
        {
            Assert.Empty(SocketActivation.TakeSockets());
            Assert.Null(Environment.GetEnvironmentVariable("LISTEN_PID"));
            Assert.Null(Environment.GetEnvironmentVariable("LISTEN_FDS"));
            Assert.Null(Environment.GetEnvironmentVariable("LISTEN_FDNAMES"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("LISTEN_PID", null);
            Environment.SetEnvironmentVariable("LISTEN_FDS", null);
            Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        }
    }
#else
    [Fact]
    public void The_netstandard_build_says_socket_activation_needs_a_later_build()
    {
        var e = Assert.Throws<PlatformNotSupportedException>(() => SocketActivation.TakeSockets());
        Assert.Contains("net8.0", e.Message, StringComparison.Ordinal);
    }
#endif
}
