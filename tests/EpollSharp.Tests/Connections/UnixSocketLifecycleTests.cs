using System.IO;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Unix domain sockets beyond a plain path: abstract names, and the life of the socket file (a stale one removed at start,
/// a live one left with address-in-use, something else at the path refused, the file removed when the listener stops and
/// only if it is still the listener's, its mode set).
/// </summary>
public sealed class UnixSocketLifecycleTests : IDisposable
{
    private readonly string _path = UnixSocketTests.TempSocketPath();

    public void Dispose() => File.Delete(_path);

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task A_listener_on_an_abstract_name_serves_a_plain_client_and_a_dialed_connection(EventLoopBackend backend)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "abstract Unix socket names are a Linux feature");
        var name = new UnixDomainSocketEndPoint("\0es-abstract-" + Guid.NewGuid().ToString("N"));
        var handler = new EchoHandler();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, name, handler);

        using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 })
        {
            client.Connect(name);
            byte[] data = SocketTestExtensions.Pattern(3, 5000);
            client.Send(data);
            Assert.True(data.AsSpan().SequenceEqual(client.ReceiveExactly(data.Length)), "the echo matches");
        }

        Connection dialed = await Connection.ConnectAsync(loop, name, new EchoHandler());
        LoopHarness.WaitUntil(() => handler.Connected == 2, "both connections accepted");
        harness.Invoke(() => dialed.Close());
        Assert.Empty(handler.OptionFailures);
        Assert.Equal(2, listener.AcceptedCount);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_stale_socket_file_is_removed_and_the_path_bound(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        LeaveStaleSocketFile(_path);
        var handler = new EchoHandler();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), handler);
        AssertEchoes(_path, 7);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_path_a_live_listener_holds_fails_with_address_in_use_and_the_first_listener_still_serves(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var first = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());
        DateTime created = File.GetLastWriteTimeUtc(_path);

        using EventLoop other = Backends.CreateLoop(backend);
        var error = Assert.Throws<SocketException>(() => ConnectionListener.Listen(other, new UnixDomainSocketEndPoint(_path), new EchoHandler()));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);

        Assert.True(File.Exists(_path), "the live listener's file is still there");
        Assert.Equal(created, File.GetLastWriteTimeUtc(_path));
        AssertEchoes(_path, 2);
    }

    [SkippableFact]
    public void A_path_a_plain_listening_socket_holds_fails_with_address_in_use()
    {
        SkipUnlessLinux();
        using var holder = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        holder.Bind(new UnixDomainSocketEndPoint(_path));
        holder.Listen(1);
        using var loop = new EventLoop();
        var error = Assert.Throws<SocketException>(() => ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler()));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
        Assert.True(File.Exists(_path));
    }

    [SkippableFact]
    public void A_regular_file_at_the_path_is_refused_with_a_clear_message_and_left_untouched()
    {
        SkipUnlessLinux();
        File.WriteAllText(_path, "not a socket");
        using var loop = new EventLoop();
        var error = Assert.Throws<IOException>(() => ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler()));
        Assert.Contains("not a socket", error.Message);
        Assert.Contains("a regular file", error.Message);
        Assert.Contains(_path, error.Message);
        Assert.Equal("not a socket", File.ReadAllText(_path));
    }

    [SkippableFact]
    public void A_directory_at_the_path_is_refused_and_left_untouched()
    {
        SkipUnlessLinux();
        Directory.CreateDirectory(_path);
        try
        {
            using var loop = new EventLoop();
            var error = Assert.Throws<IOException>(() => ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler()));
            Assert.Contains("a directory", error.Message);
            Assert.True(Directory.Exists(_path));
        }
        finally
        {
            Directory.Delete(_path);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_file_is_removed_at_Dispose_and_the_path_can_be_bound_again(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());
        Assert.True(File.Exists(_path));
        listener.Dispose();
        LoopHarness.WaitUntil(() => !File.Exists(_path), "the socket file is removed");

        using var again = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());
        AssertEchoes(_path, 1);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task The_file_is_removed_at_ShutdownAsync(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        using var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());
        AssertEchoes(_path, 1);
        await listener.ShutdownAsync(TimeSpan.FromSeconds(5));
        LoopHarness.WaitUntil(() => !File.Exists(_path), "the socket file is removed");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_file_is_removed_when_the_loop_is_disposed(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        EventLoop loop = Backends.CreateLoop(backend);
        var harness = new LoopHarness(loop);
        ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());
        AssertEchoes(_path, 1);
        harness.Dispose();
        Assert.False(File.Exists(_path), "the socket file is removed by the time the loop is disposed");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_file_that_someone_else_put_at_the_path_is_not_removed(EventLoopBackend backend)
    {
        SkipUnlessLinux();
        using EventLoop loop = Backends.CreateLoop(backend);
        using var harness = new LoopHarness(loop);
        var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler());

        // Another server removes the file and binds the path afresh. The kernel may give the new file the inode number the
        // removed one had; the listener then tells them apart by birth time, which advances by the clock tick (a few ms).
        Thread.Sleep(30);
        File.Delete(_path);
        using var successor = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        successor.Bind(new UnixDomainSocketEndPoint(_path));
        successor.Listen(4);

        listener.Dispose();
        harness.Settle();
        Assert.True(File.Exists(_path), "the successor's file is left");
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(_path));
        using Socket accepted = successor.Accept();
    }

    [SkippableTheory]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [InlineData("600", UnixFileMode.UserRead | UnixFileMode.UserWrite)]
    [InlineData("666", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite)]
    public void UnixSocketMode_is_applied_to_the_file(string octal, UnixFileMode expected)
    {
        SkipUnlessLinux();
        using var loop = new EventLoop();
        using var harness = new LoopHarness(loop);
        var options = new ListenerOptions { UnixSocketMode = Convert.ToInt32(octal, 8) };
        using var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(_path), new EchoHandler(), options);
        Assert.Equal(expected, File.GetUnixFileMode(_path));
        AssertEchoes(_path, 1);
    }

    [Fact]
    public void UnixSocketMode_out_of_range_or_on_an_endpoint_without_a_file_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ListenerOptions { UnixSocketMode = 512 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ListenerOptions { UnixSocketMode = -1 });
        using var loop = new EventLoop();
        var options = new ListenerOptions { UnixSocketMode = Convert.ToInt32("600", 8) };
        var error = Assert.Throws<ArgumentException>(() => ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), options));
        Assert.Contains("UnixSocketMode", error.Message);
        if (OperatingSystem.IsLinux())
        {
            error = Assert.Throws<ArgumentException>(() => ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint("\0es-" + Guid.NewGuid().ToString("N")), new EchoHandler(), options));
            Assert.Contains("abstract", error.Message);
        }
    }

    private static void SkipUnlessLinux() => Skip.IfNot(OperatingSystem.IsLinux(), "the socket file's life is managed on Linux only");

    /// <summary>
    /// Binds a socket to <paramref name="path"/> and closes it without listening, as a server that crashed: the file stays, and
    /// connecting to it is refused. (Bound through a plain <see cref="EndPoint"/>: .NET deletes the file of a socket bound
    /// through a <see cref="UnixDomainSocketEndPoint"/> when it is disposed.)
    /// </summary>
    private static void LeaveStaleSocketFile(string path)
    {
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            dead.Bind(new PlainEndPoint(new UnixDomainSocketEndPoint(path)));
        }

        Assert.True(File.Exists(path));
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        var refused = Assert.Throws<SocketException>(() => probe.Connect(new UnixDomainSocketEndPoint(path)));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    private static void AssertEchoes(string path, int seed)
    {
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 };
        client.Connect(new UnixDomainSocketEndPoint(path));
        byte[] data = SocketTestExtensions.Pattern(seed, 1000);
        client.Send(data);
        Assert.True(data.AsSpan().SequenceEqual(client.ReceiveExactly(data.Length)), "the echo matches");
    }

    private sealed class PlainEndPoint(EndPoint inner) : EndPoint
    {
        public override AddressFamily AddressFamily => inner.AddressFamily;

        public override SocketAddress Serialize() => inner.Serialize();

        public override EndPoint Create(SocketAddress socketAddress) => inner.Create(socketAddress);
    }
}
