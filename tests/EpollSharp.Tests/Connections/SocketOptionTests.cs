using System.IO;
using System.Runtime.InteropServices;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;
using SO = EpollSharp.Interop.SocketOptions;

/// <summary>
/// Keep-alive, the kernel's buffer sizes and linger (<see cref="ConnectionOptions"/>): set on accepted and dialed
/// connections, read back from the kernel with <c>getsockopt</c> on the server's side of a real connection (Linux).
/// </summary>
public class SocketOptionTests
{
    /// <summary>Every option set, with values unlike the system's defaults.</summary>
    private static ConnectionOptions AllSet() => new()
    {
        KeepAlive = true,
        KeepAliveTime = TimeSpan.FromSeconds(45),
        KeepAliveInterval = TimeSpan.FromSeconds(7),
        KeepAliveRetryCount = 4,
        SocketSendBufferSize = 32 * 1024,
        SocketReceiveBufferSize = 40 * 1024,
        Linger = TimeSpan.FromSeconds(5),
    };

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_accepted_tcp_connection_gets_every_option(EventLoopBackend backend)
    {
        SkipUnlessLinuxWithRoomForBuffers();
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = AllSet() });
        using Socket client = server.Connect();
        client.Send(new byte[] { 42 });
        Assert.Equal(42, client.ReceiveExactly(1)[0]);

        Connection connection = Assert.Single(handler.Connections);
        AssertAllSet(connection.SocketForTests, tcp: true);
        Assert.Empty(handler.OptionFailures);
        server.AssertNoLoopErrors();
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_dialed_tcp_connection_gets_every_option(EventLoopBackend backend)
    {
        SkipUnlessLinuxWithRoomForBuffers();
        var handler = new EchoHandler();
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        using Socket listener = RunningLoop.PlainListener(1);

        Connection connection = await Connection.ConnectAsync(loop, listener.LocalEndPoint!, handler, new ConnectOptions { Connection = AllSet() }).WaitAsync(TimeSpan.FromSeconds(20));
        using Socket peer = listener.Accept();
        peer.ReceiveTimeout = 10_000;
        peer.Send(new byte[] { 7 });
        Assert.Equal(7, peer.ReceiveExactly(1)[0]);

        AssertAllSet(connection.SocketForTests, tcp: true);
        Assert.Empty(handler.OptionFailures);
        Assert.Empty(errors);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Default_options_leave_the_systems_values(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the option numbers read back are Linux's");

        // The same connection made with plain sockets: what the system gives without the library.
        using var plainListener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        plainListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        plainListener.Listen(1);
        using Socket plainClient = EchoServer.ConnectTo(plainListener.LocalEndPoint!);
        using Socket plain = plainListener.Accept();

        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using Socket client = server.Connect();
        LoopHarness.WaitUntil(() => handler.Connected == 1, "the connection starts");
        Socket socket = Assert.Single(handler.Connections).SocketForTests;

        Assert.Equal(0, GetInt(socket, SO.SOL_SOCKET, SO.SO_KEEPALIVE));
        Assert.Equal(ReadProcInt("net/ipv4/tcp_keepalive_time"), GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPIDLE));
        Assert.Equal(ReadProcInt("net/ipv4/tcp_keepalive_intvl"), GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPINTVL));
        Assert.Equal(ReadProcInt("net/ipv4/tcp_keepalive_probes"), GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPCNT));
        Assert.Equal((0, 0), GetLinger(socket));
        foreach (int option in new[] { SO.SO_KEEPALIVE, SO.SO_SNDBUF, SO.SO_RCVBUF })
        {
            Assert.Equal(GetInt(plain, SO.SOL_SOCKET, option), GetInt(socket, SO.SOL_SOCKET, option));
        }

        Assert.Equal(GetLinger(plain), GetLinger(socket));
        Assert.Empty(handler.OptionFailures);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void On_a_unix_socket_the_socket_level_options_are_set_and_the_tcp_ones_not_tried(EventLoopBackend backend)
    {
        SkipUnlessLinuxWithRoomForBuffers();
        string path = UnixSocketTests.TempSocketPath();
        var handler = new EchoHandler();
        using var run = new RunningLoop(backend);
        EventLoop loop = run.Loop;
        var errors = run.Errors;
        try
        {
            using var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), handler, new ListenerOptions { Connection = AllSet() });
            using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 };
            client.Connect(new UnixDomainSocketEndPoint(path));
            client.Send(new byte[] { 9 });
            Assert.Equal(9, client.ReceiveExactly(1)[0]);

            Connection connection = Assert.Single(handler.Connections);
            AssertAllSet(connection.SocketForTests, tcp: false);

            // Linux has no TCP options on a Unix socket (EOPNOTSUPP): the connection does not try them, so nothing failed.
            var e = Assert.Throws<SocketException>(() => GetInt(connection.SocketForTests, SO.IPPROTO_TCP, SO.TCP_KEEPIDLE));
            Assert.Equal(SocketError.OperationNotSupported, e.SocketErrorCode);
            Assert.Empty(handler.OptionFailures);
            Assert.Empty(errors);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Values_out_of_range_throw_naming_the_property()
    {
        var options = new ConnectionOptions();
        foreach (TimeSpan bad in new[] { TimeSpan.Zero, TimeSpan.FromSeconds(-1), TimeSpan.FromMilliseconds(1500), TimeSpan.FromMilliseconds(999), TimeSpan.FromSeconds(32768), TimeSpan.MaxValue })
        {
            Assert.Equal(nameof(ConnectionOptions.KeepAliveTime), Assert.Throws<ArgumentOutOfRangeException>(() => options.KeepAliveTime = bad).ParamName);
            Assert.Equal(nameof(ConnectionOptions.KeepAliveInterval), Assert.Throws<ArgumentOutOfRangeException>(() => options.KeepAliveInterval = bad).ParamName);
        }

        foreach (int bad in new[] { 0, -1, 128 })
        {
            Assert.Equal(nameof(ConnectionOptions.KeepAliveRetryCount), Assert.Throws<ArgumentOutOfRangeException>(() => options.KeepAliveRetryCount = bad).ParamName);
        }

        foreach (int bad in new[] { 0, -1, int.MinValue })
        {
            Assert.Equal(nameof(ConnectionOptions.SocketSendBufferSize), Assert.Throws<ArgumentOutOfRangeException>(() => options.SocketSendBufferSize = bad).ParamName);
            Assert.Equal(nameof(ConnectionOptions.SocketReceiveBufferSize), Assert.Throws<ArgumentOutOfRangeException>(() => options.SocketReceiveBufferSize = bad).ParamName);
        }

        // Zero is refused: an abortive close is Abort().
        foreach (TimeSpan bad in new[] { TimeSpan.Zero, TimeSpan.FromSeconds(-5), TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(3601) })
        {
            Assert.Equal(nameof(ConnectionOptions.Linger), Assert.Throws<ArgumentOutOfRangeException>(() => options.Linger = bad).ParamName);
        }

        // Nothing was changed by the refused values.
        Assert.Null(options.KeepAliveTime);
        Assert.Null(options.KeepAliveInterval);
        Assert.Null(options.KeepAliveRetryCount);
        Assert.Null(options.SocketSendBufferSize);
        Assert.Null(options.SocketReceiveBufferSize);
        Assert.Null(options.Linger);
        Assert.False(options.KeepAlive);
    }

    [Fact]
    public void The_bounds_and_null_are_accepted()
    {
        var options = new ConnectionOptions
        {
            KeepAliveTime = TimeSpan.FromSeconds(1),
            KeepAliveInterval = TimeSpan.FromSeconds(32767),
            KeepAliveRetryCount = 127,
            SocketSendBufferSize = 1,
            SocketReceiveBufferSize = int.MaxValue,
            Linger = TimeSpan.FromSeconds(3600),
        };
        Assert.Equal(TimeSpan.FromSeconds(1), options.KeepAliveTime);
        Assert.Equal(TimeSpan.FromSeconds(32767), options.KeepAliveInterval);
        Assert.Equal(127, options.KeepAliveRetryCount);
        Assert.Equal(1, options.SocketSendBufferSize);
        Assert.Equal(int.MaxValue, options.SocketReceiveBufferSize);
        Assert.Equal(TimeSpan.FromSeconds(3600), options.Linger);

        options.KeepAliveTime = null;
        options.KeepAliveInterval = null;
        options.KeepAliveRetryCount = null;
        options.SocketSendBufferSize = null;
        options.SocketReceiveBufferSize = null;
        options.Linger = null;
        Assert.Null(options.KeepAliveTime);
        Assert.Null(options.Linger);
    }

    /// <summary>
    /// What <see cref="AllSet"/> asks, as the kernel reports it: Linux doubles the buffer sizes it is given (the extra is
    /// its bookkeeping), so the read-back is twice the value set.
    /// </summary>
    private static void AssertAllSet(Socket socket, bool tcp)
    {
        Assert.Equal(1, GetInt(socket, SO.SOL_SOCKET, SO.SO_KEEPALIVE));
        Assert.Equal(2 * 32 * 1024, GetInt(socket, SO.SOL_SOCKET, SO.SO_SNDBUF));
        Assert.Equal(2 * 40 * 1024, GetInt(socket, SO.SOL_SOCKET, SO.SO_RCVBUF));
        Assert.Equal((1, 5), GetLinger(socket));
        if (tcp)
        {
            Assert.Equal(45, GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPIDLE));
            Assert.Equal(7, GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPINTVL));
            Assert.Equal(4, GetInt(socket, SO.IPPROTO_TCP, SO.TCP_KEEPCNT));
        }
    }

    private static void SkipUnlessLinuxWithRoomForBuffers()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the option numbers read back, and the doubling of buffer sizes, are Linux's");
        Skip.If(ReadProcInt("net/core/wmem_max") < 32 * 1024 || ReadProcInt("net/core/rmem_max") < 40 * 1024, "net.core.wmem_max or rmem_max is below the sizes set, which the kernel would cap");
    }

    private static int ReadProcInt(string name) => int.Parse(File.ReadAllText("/proc/sys/" + name).Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary><c>getsockopt</c> of an <c>int</c> option, raw (no .NET mapping in between).</summary>
    private static int GetInt(Socket socket, int level, int name)
    {
        Span<byte> value = stackalloc byte[sizeof(int)];
        Assert.Equal(sizeof(int), socket.GetRawSocketOption(level, name, value));
        return MemoryMarshal.Read<int>(value);
    }

    /// <summary><c>struct linger { int l_onoff; int l_linger; }</c>, raw.</summary>
    private static (int OnOff, int Seconds) GetLinger(Socket socket)
    {
        Span<byte> value = stackalloc byte[2 * sizeof(int)];
        Assert.Equal(2 * sizeof(int), socket.GetRawSocketOption(SO.SOL_SOCKET, SO.SO_LINGER, value));
        return (MemoryMarshal.Read<int>(value), MemoryMarshal.Read<int>(value.Slice(sizeof(int))));
    }
}
