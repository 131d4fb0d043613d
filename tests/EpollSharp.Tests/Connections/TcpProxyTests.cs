using System.Diagnostics;
using System.IO;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// samples/TcpProxy (and samples/InBoxTcpProxy, its in-box comparison, where marked) as processes between real loopback
/// sockets: a test client, the proxy, and a target served by the test (<see cref="ProxyTarget"/>) whose behaviour each test
/// chooses. Every byte is checked; every wait is bounded.
/// </summary>
[Collection(TimingSensitive.Name)]
public class TcpProxyTests
{
    private const int SigTerm = 15;
    private static readonly TimeSpan LineTimeout = TimeSpan.FromSeconds(20);
    private readonly ITestOutputHelper _output;

    public TcpProxyTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData("TcpProxy", "")]
    [InlineData("TcpProxy", "--loops 2 --trigger edge")]
    [InlineData("TcpProxy", "--backend io_uring")]
    [InlineData("TcpProxy", "--backend io_uring --loops 2")]
    [InlineData("InBoxTcpProxy", "")]
    public async Task Proxy_relays_every_byte_both_ways_on_many_connections(string sample, string extra)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        long targetReceived = 0;
        using var target = ProxyTarget.Tcp(socket => EchoUntilEndAsync(socket, n => Interlocked.Add(ref targetReceived, n)));
        using SampleProcess proxy = StartProxy(sample, target.Address, extra);

        const int Connections = 40;
        var tasks = new Task<long>[Connections];
        for (int i = 0; i < Connections; i++)
        {
            int seed = i;
            tasks[i] = Task.Run(async () =>
            {
                using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
                byte[] data = SocketTestExtensions.Pattern(100 + seed, 1 + (seed * 7919 % 200_000));
                Task<byte[]> receive = ReceiveToEndAsync(client); // async: 40 blocked pool threads would starve the target's
                await client.SendAllAsync(data);
                client.Shutdown(SocketShutdown.Send);
                byte[] back = await receive.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(data.Length, back.Length);
                Assert.True(data.AsSpan().SequenceEqual(back), $"connection {seed}: the bytes differ");
                return (long)data.Length;
            });
        }

        long total = (await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60))).Sum();
        Assert.Equal(total, Interlocked.Read(ref targetReceived));
        target.AssertNoErrors();

        string stats = StopAndReadStats(proxy);
        Assert.Equal(Connections, StatsField(stats, "connections"));
        Assert.Equal(total, StatsField(stats, "bytes_to_target"));
        Assert.Equal(total, StatsField(stats, "bytes_to_client"));
        Assert.Equal(0, StatsField(stats, "connect_failures"));
        Assert.Equal(0, StatsField(stats, "resets_passed"));
        Assert.Empty(proxy.Stderr);
    }

    /// <summary>The client shuts down its sending side; the target sees end of stream only after the whole request, then answers, and the client reads all of the answer and then end of stream.</summary>
    [SkippableTheory]
    [InlineData("TcpProxy")]
    [InlineData("InBoxTcpProxy")]
    [InlineData("TcpProxy", "--backend io_uring")]
    public void Half_close_passes_through_and_the_answer_after_it_arrives_whole(string sample, string extra = "")
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        byte[] request = SocketTestExtensions.Pattern(1, 70_000);
        byte[] answer = SocketTestExtensions.Pattern(2, 900_000);
        var seenByTarget = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var target = ProxyTarget.Tcp(async socket =>
        {
            byte[] got = await Task.Run(() => socket.ReceiveToEnd()); // the client's FIN, passed through
            seenByTarget.TrySetResult(got);
            await socket.SendAllAsync(answer);                       // answered after the end of the request
            socket.Shutdown(SocketShutdown.Send);
        });
        using SampleProcess proxy = StartProxy(sample, target.Address, extra);

        using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
        client.Send(request);
        client.Shutdown(SocketShutdown.Send);
        byte[] back = client.ReceiveToEnd();
        Assert.True(seenByTarget.Task.Wait(TimeSpan.FromSeconds(10)), "the target did not see end of stream");
        Assert.Equal(request, seenByTarget.Task.Result);
        Assert.Equal(answer.Length, back.Length);
        Assert.Equal(answer, back);
        target.AssertNoErrors();

        string stats = StopAndReadStats(proxy);
        Assert.Equal(request.Length, StatsField(stats, "bytes_to_target"));
        Assert.Equal(answer.Length, StatsField(stats, "bytes_to_client"));
        Assert.Equal(0, StatsField(stats, "resets_passed"));
    }

    /// <summary>A target that resets makes the client see a reset (not an orderly end), and a client that resets makes the target see one.</summary>
    [SkippableTheory]
    [InlineData("TcpProxy")]
    [InlineData("InBoxTcpProxy")]
    [InlineData("TcpProxy", "--backend io_uring")]
    public void A_reset_is_passed_on_both_ways(string sample, string extra = "")
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        var targetSaw = new TaskCompletionSource<SocketError>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var target = ProxyTarget.Tcp(async socket =>
        {
            var one = new byte[1];
            int n = await socket.ReceiveAsync(one, SocketFlags.None);
            if (n == 1 && one[0] == (byte)'R')
            {
                socket.LingerState = new LingerOption(true, 0); // the target resets
                socket.Close();
                return;
            }

            // 'K': wait for what the client's reset becomes on this side.
            try
            {
                while (await socket.ReceiveAsync(new byte[256], SocketFlags.None) > 0)
                {
                }

                targetSaw.TrySetResult(SocketError.Success);
            }
            catch (SocketException e)
            {
                targetSaw.TrySetResult(e.SocketErrorCode);
            }
        });
        using SampleProcess proxy = StartProxy(sample, target.Address, extra);

        // Target → client.
        using (Socket client = EchoServer.ConnectTo(proxy.EndPoint))
        {
            client.Send(new[] { (byte)'R' });
            SocketException e = Assert.Throws<SocketException>(() => client.ReceiveToEnd());
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
        }

        // Client → target.
        using (Socket client = EchoServer.ConnectTo(proxy.EndPoint))
        {
            client.Send(new[] { (byte)'K', (byte)'x' });
            Thread.Sleep(200); // relayed, and the target is waiting
            client.LingerState = new LingerOption(true, 0);
            client.Close();
        }

        Assert.True(targetSaw.Task.Wait(TimeSpan.FromSeconds(10)), "the target saw nothing of the client's reset");
        Assert.Equal(SocketError.ConnectionReset, targetSaw.Task.Result);

        string stats = StopAndReadStats(proxy);
        Assert.Equal(2, StatsField(stats, "resets_passed"));
    }

    /// <summary>
    /// A client that stops reading stops the proxy from reading the target: the target's sending stalls once the kernel's
    /// buffers and the proxy's bounded backlog are full, and the proxy's memory does not grow with what the target would
    /// send. The same the other way round. Then both readers resume and every byte arrives in order.
    /// </summary>
    [SkippableFact]
    public void A_side_that_stops_reading_stops_the_other_from_being_read_with_the_memory_bounded()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        var producers = new ConcurrentQueue<StreamProducer>();
        var targetSockets = new ConcurrentQueue<Socket>();
        using var target = ProxyTarget.Tcp(socket =>
        {
            var one = new byte[1];
            if (socket.Receive(one) == 1 && one[0] == (byte)'P')
            {
                // Produce towards the client as fast as the proxy takes it.
                var producer = new StreamProducer(socket);
                producers.Enqueue(producer);
                return producer.Completion;
            }

            // 'S': a target that does not read; kept open until the test reads.
            targetSockets.Enqueue(socket);
            return Task.Delay(TimeSpan.FromSeconds(40));
        });
        using SampleProcess proxy = StartProxy("TcpProxy", target.Address);
        long rssBefore = RssBytes(proxy.Process.Id);

        // Target → client: the client does not read.
        using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
        client.Send(new[] { (byte)'P' });
        StreamProducer producer = WaitFor(producers, "the target's producer");
        long stalledAt = producer.WaitForStall(TimeSpan.FromMilliseconds(700), TimeSpan.FromSeconds(15));
        long rssStalled = RssBytes(proxy.Process.Id);
        _output.WriteLine($"target→client stalled after {stalledAt:N0} bytes; proxy RSS {rssBefore:N0} → {rssStalled:N0}");
        Assert.True(stalledAt > 0, "the target sent nothing");
        Assert.True(stalledAt < 64L * 1024 * 1024, $"the target sent {stalledAt:N0} bytes to a client that reads nothing");
        Thread.Sleep(1000);
        Assert.Equal(stalledAt, producer.Sent); // still stalled: the proxy is not reading the target
        Assert.True(rssStalled - rssBefore < 24L * 1024 * 1024, $"the proxy's RSS grew by {rssStalled - rssBefore:N0} bytes");

        // The client reads again: every byte, in order, and the producer moves on.
        producer.StopAfter(stalledAt + (4 * 1024 * 1024));
        long expected = producer.Completion.IsCompleted ? producer.Sent : -1;
        var buffer = new byte[65536];
        long received = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            int n = client.Receive(buffer);
            if (n == 0)
            {
                break;
            }

            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != StreamProducer.ByteAt(received + i))
                {
                    Assert.Fail($"byte {received + i:N0} differs");
                }
            }

            received += n;
        }

        Assert.True(producer.Completion.Wait(TimeSpan.FromSeconds(10)), "the producer did not finish");
        expected = producer.Sent;
        Assert.Equal(expected, received);
        Assert.True(received > stalledAt, "the target did not resume after the client read");

        // Client → target: the target does not read; the client's sending stalls.
        using Socket writer = EchoServer.ConnectTo(proxy.EndPoint);
        writer.Send(new[] { (byte)'S' });
        Socket silent = WaitFor(targetSockets, "the silent target connection");
        var clientProducer = new StreamProducer(writer);
        long clientStalledAt = clientProducer.WaitForStall(TimeSpan.FromMilliseconds(700), TimeSpan.FromSeconds(15));
        long rssStalled2 = RssBytes(proxy.Process.Id);
        _output.WriteLine($"client→target stalled after {clientStalledAt:N0} bytes; proxy RSS {rssStalled2:N0}");
        Assert.True(clientStalledAt < 64L * 1024 * 1024, $"the client sent {clientStalledAt:N0} bytes to a target that reads nothing");
        Assert.True(rssStalled2 - rssBefore < 24L * 1024 * 1024, $"the proxy's RSS grew by {rssStalled2 - rssBefore:N0} bytes");
        clientProducer.StopAfter(clientStalledAt + (1024 * 1024));
        silent.ReceiveTimeout = 10_000;
        long got = 0;
        while (!clientProducer.Completion.IsCompleted || got < clientProducer.Sent)
        {
            int n = silent.Receive(buffer);
            Assert.True(n > 0, "end of stream before every byte");
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != StreamProducer.ByteAt(got + i))
                {
                    Assert.Fail($"byte {got + i:N0} differs on the way to the target");
                }
            }

            got += n;
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "the client's stream did not arrive");
        }

        Assert.Equal(clientProducer.Sent, got);
        target.AssertNoErrors();
    }

    [SkippableFact]
    public void A_target_on_a_Unix_domain_socket_is_relayed_to()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        string path = Path.Combine(Path.GetTempPath(), $"epollsharp-proxy-{Environment.ProcessId}-{Guid.NewGuid():N}.sock");
        using var target = ProxyTarget.Unix(path, EchoUntilEndAsync);
        using SampleProcess proxy = StartProxy("TcpProxy", "unix:" + path);

        using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
        byte[] data = SocketTestExtensions.Pattern(7, 300_000);
        var sender = new Thread(() =>
        {
            client.Send(data);
            client.Shutdown(SocketShutdown.Send);
        });
        sender.Start();
        Assert.Equal(data, client.ReceiveToEnd());
        sender.Join();
        Assert.Equal(data.Length, StatsField(StopAndReadStats(proxy), "bytes_to_client"));
    }

    /// <summary>The target given as a name (resolved by the proxy; localhost may give ::1 first, which this target refuses, then 127.0.0.1) or as [IPv6]:port.</summary>
    [SkippableTheory]
    [InlineData("name")]
    [InlineData("ipv6")]
    public void A_target_given_by_name_or_IPv6_address_is_relayed_to(string kind)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        Skip.If(kind == "ipv6" && !Socket.OSSupportsIPv6, "no IPv6 on this machine");
        using var target = kind == "ipv6" ? ProxyTarget.TcpV6(EchoUntilEndAsync) : ProxyTarget.Tcp(EchoUntilEndAsync);
        int port = int.Parse(target.Address.Substring(target.Address.LastIndexOf(':') + 1), System.Globalization.CultureInfo.InvariantCulture);
        using SampleProcess proxy = StartProxy("TcpProxy", kind == "ipv6" ? $"[::1]:{port}" : $"localhost:{port}");

        using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
        byte[] data = SocketTestExtensions.Pattern(8, 50_000);
        client.Send(data);
        client.Shutdown(SocketShutdown.Send);
        Assert.Equal(data, client.ReceiveToEnd());
        string stats = StopAndReadStats(proxy);
        Assert.Equal(data.Length, StatsField(stats, "bytes_to_client"));
        Assert.Equal(0, StatsField(stats, "connect_failures"));
    }

    /// <summary>
    /// The client sends its whole request and its end of stream while the proxy's connect to the target is still in
    /// progress (the target's accept queue of backlog 0 holds one unaccepted connection, so Linux drops the SYN until a retransmission a second later): nothing
    /// is lost, and the end of stream arrives after the data.
    /// </summary>
    [SkippableTheory]
    [InlineData("TcpProxy")]
    [InlineData("InBoxTcpProxy")]
    [InlineData("TcpProxy", "--backend io_uring")]
    public void Data_sent_before_the_target_is_connected_is_relayed_whole(string sample, string extra = "")
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(0);
        var endPoint = (IPEndPoint)listener.LocalEndPoint!;
        using var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Assert.True(filler.ConnectAsync(endPoint).Wait(5_000), "the filler did not connect"); // completed by the kernel, not accepted: the queue of backlog 0 is full

        using SampleProcess proxy = StartProxy(sample, endPoint.ToString(), extra);
        using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
        byte[] request = SocketTestExtensions.Pattern(9, 120_000);
        client.Send(request);
        client.Shutdown(SocketShutdown.Send);
        Thread.Sleep(300); // the proxy holds the request (unread) while its SYN is being dropped

        // Make room: accept and drop the filler; the proxy's retransmitted SYN then gets through.
        listener.Accept().Dispose();
        Assert.True(listener.Poll(15_000_000, SelectMode.SelectRead), "the proxy's connection did not arrive");
        using Socket accepted = listener.Accept();
        accepted.ReceiveTimeout = 10_000;
        byte[] got = accepted.ReceiveToEnd();
        Assert.Equal(request.Length, got.Length);
        Assert.Equal(request, got);
        accepted.Send(new byte[] { 42 });
        accepted.Shutdown(SocketShutdown.Send);
        Assert.Equal(new byte[] { 42 }, client.ReceiveToEnd());
        Assert.Equal(0, StatsField(StopAndReadStats(proxy), "connect_failures"));
    }

    /// <summary>A target that refuses: the client's connection is ended (reset), and the failure is counted.</summary>
    [SkippableTheory]
    [InlineData("TcpProxy")]
    [InlineData("InBoxTcpProxy")]
    [InlineData("TcpProxy", "--backend io_uring")]
    public void A_refused_target_closes_the_client_connection(string sample, string extra = "")
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        int port;
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)probe.LocalEndPoint!).Port; // bound, never listening: connects are refused
            using SampleProcess proxy = StartProxy(sample, $"127.0.0.1:{port}", extra);
            using Socket client = EchoServer.ConnectTo(proxy.EndPoint);
            client.Send(new byte[] { 1, 2, 3 });
            try
            {
                Assert.Equal(0, client.Receive(new byte[16]));
            }
            catch (SocketException e)
            {
                Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
            }

            string stats = StopAndReadStats(proxy);
            Assert.Equal(1, StatsField(stats, "connect_failures"));
            Assert.Equal(0, StatsField(stats, "bytes_to_target"));
        }
    }

    /// <summary>The ready line, and SIGTERM with a session in flight: the target gets end of stream, its answer still reaches the client, then the stats line and exit code 0.</summary>
    [SkippableTheory]
    [InlineData("TcpProxy", "backend=epoll loops=1")]
    [InlineData("TcpProxy", "backend=io_uring loops=1", "--backend io_uring")]
    [InlineData("InBoxTcpProxy", "backend=inbox-async loops=0")]
    public void Ready_line_and_a_graceful_stop_on_SIGTERM_with_its_stats_line(string sample, string expectedTail, string extra = "")
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests signal a Linux process");
        using var target = ProxyTarget.Tcp(EchoUntilEndAsync);
        using SampleProcess proxy = StartProxy(sample, target.Address, extra);
        _output.WriteLine(proxy.ListeningLine);
        Assert.Matches(@"^listening on 127\.0\.0\.1:\d+ ", proxy.ListeningLine);
        Assert.EndsWith(expectedTail, proxy.ListeningLine, StringComparison.Ordinal);

        using Socket late = EchoServer.ConnectTo(proxy.EndPoint);
        byte[] inFlight = SocketTestExtensions.Pattern(6, 40_000);
        late.Send(inFlight);
        Thread.Sleep(300);
        proxy.Signal(SigTerm);
        Assert.Equal(inFlight, late.ReceiveToEnd());
        late.Dispose();

        string stats = proxy.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), LineTimeout);
        _output.WriteLine(stats);
        Assert.Matches(@"^stats: connections=1 bytes_to_target=40000 bytes_to_client=40000 connect_failures=0 resets_passed=0 allocated=\d+$", stats);
        Assert.True(proxy.Process.WaitForExit(20_000), "the proxy did not exit");
        Assert.Equal(0, proxy.Process.ExitCode);
        Assert.Empty(proxy.Stderr);
    }

    [SkippableTheory]
    [InlineData("")]
    [InlineData("--target nowhere")]
    [InlineData("--target 127.0.0.1:0")]
    [InlineData("--target 127.0.0.1:9 --listen nowhere")]
    public void TcpProxy_rejects_a_bad_command_line(string arguments)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the proxy tests run Linux processes");
        using SampleProcess proxy = SampleProcess.Launch("TcpProxy", arguments);
        Assert.True(proxy.Process.WaitForExit(20_000), "the proxy did not exit");
        proxy.Process.WaitForExit();
        Assert.Equal(2, proxy.Process.ExitCode);
        Assert.Contains(proxy.Stderr, l => l.StartsWith("usage:", StringComparison.Ordinal));
    }

    /// <summary>Starts <paramref name="sample"/>; a test of the io_uring backend (<c>--backend io_uring</c> in <paramref name="extra"/>) is skipped where io_uring cannot be set up.</summary>
    private static SampleProcess StartProxy(string sample, string target, string extra = "")
    {
        if (extra.Contains("--backend io_uring", StringComparison.Ordinal))
        {
            Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        }

        return SampleProcess.Start(sample, $"--listen 127.0.0.1:0 --target {target} {extra}");
    }

    private string StopAndReadStats(SampleProcess proxy)
    {
        proxy.Signal(SigTerm);
        string stats = proxy.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), LineTimeout);
        _output.WriteLine(stats);
        Assert.True(proxy.Process.WaitForExit(20_000), "the proxy did not exit");
        Assert.Equal(0, proxy.Process.ExitCode);
        return stats;
    }

    private static long StatsField(string stats, string name)
    {
        Match m = Regex.Match(stats, $@"\b{name}=(\d+)\b");
        Assert.True(m.Success, $"no {name} in: {stats}");
        return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    private static Task EchoUntilEndAsync(Socket socket) => EchoUntilEndAsync(socket, static _ => { });

    private static async Task EchoUntilEndAsync(Socket socket, Action<int> received)
    {
        var buffer = new byte[32 * 1024];
        while (true)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None);
            if (n == 0)
            {
                socket.Shutdown(SocketShutdown.Send);
                return;
            }

            received(n);
            await socket.SendAllAsync(buffer.AsMemory(0, n));
        }
    }

    private static async Task<byte[]> ReceiveToEndAsync(Socket socket)
    {
        var stream = new MemoryStream();
        var buffer = new byte[65536];
        while (true)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None);
            if (n == 0)
            {
                return stream.ToArray();
            }

            stream.Write(buffer, 0, n);
        }
    }

    private static T WaitFor<T>(ConcurrentQueue<T> queue, string what)
    {
        var sw = Stopwatch.StartNew();
        T? item;
        while (!queue.TryDequeue(out item))
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), what + " did not come");
            Thread.Sleep(10);
        }

        return item;
    }

    private static long RssBytes(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    /// <summary>Writes a known endless stream (non-blocking, on its own thread) and tells when it stalls.</summary>
    private sealed class StreamProducer
    {
        private readonly Socket _socket;
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _sent;
        private long _limit = long.MaxValue;
        private long _lastProgress = Stopwatch.GetTimestamp();

        public StreamProducer(Socket socket)
        {
            _socket = socket;
            new Thread(Run) { IsBackground = true, Name = "stream producer" }.Start();
        }

        public Task Completion => _done.Task;

        public long Sent => Interlocked.Read(ref _sent);

        public static byte ByteAt(long position) => (byte)((position * 7) + (position >> 11));

        public void StopAfter(long total) => Interlocked.Exchange(ref _limit, total);

        /// <summary>Waits until nothing more was sent for <paramref name="quiet"/>; returns the bytes sent.</summary>
        public long WaitForStall(TimeSpan quiet, TimeSpan timeout)
        {
            var sw = Stopwatch.StartNew();
            while (Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastProgress)) < quiet)
            {
                Assert.True(sw.Elapsed < timeout, $"the sender never stalled ({Sent:N0} bytes sent)");
                Assert.False(Completion.IsFaulted, "the sender failed: " + Completion.Exception);
                Thread.Sleep(50);
            }

            return Sent;
        }

        private void Run()
        {
            try
            {
                _socket.Blocking = false;
                var chunk = new byte[64 * 1024];
                while (true)
                {
                    long sent = Interlocked.Read(ref _sent);
                    long limit = Interlocked.Read(ref _limit);
                    if (sent >= limit)
                    {
                        _socket.Shutdown(SocketShutdown.Send);
                        _done.TrySetResult();
                        return;
                    }

                    int count = (int)Math.Min(chunk.Length, limit - sent);
                    for (int i = 0; i < count; i++)
                    {
                        chunk[i] = ByteAt(sent + i);
                    }

                    int n = _socket.Send(chunk, 0, count, SocketFlags.None, out SocketError error);
                    if (error == SocketError.WouldBlock)
                    {
                        Thread.Sleep(5);
                        continue;
                    }

                    if (error != SocketError.Success)
                    {
                        throw new SocketException((int)error);
                    }

                    Interlocked.Add(ref _sent, n);
                    Interlocked.Exchange(ref _lastProgress, Stopwatch.GetTimestamp());
                }
            }
            catch (Exception e)
            {
                _done.TrySetException(e);
            }
        }
    }
}

/// <summary>A plain target for the proxy tests: a listener (TCP on loopback, or a Unix domain socket) that runs a behaviour per accepted connection.</summary>
public sealed class ProxyTarget : IDisposable
{
    private readonly Socket _listener;
    private readonly Func<Socket, Task> _serve;
    private readonly ConcurrentQueue<Exception> _errors = new();
    private readonly ConcurrentQueue<Socket> _accepted = new();
    private readonly string? _path;

    private ProxyTarget(Socket listener, Func<Socket, Task> serve, string address, string? path)
    {
        _listener = listener;
        _serve = serve;
        Address = address;
        _path = path;
        _ = AcceptLoopAsync();
    }

    /// <summary>The address as the proxy's --target takes it.</summary>
    public string Address { get; }


    public static ProxyTarget Tcp(Func<Socket, Task> serve)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(512);
        return new ProxyTarget(listener, serve, listener.LocalEndPoint!.ToString()!, null);
    }

    public static ProxyTarget TcpV6(Func<Socket, Task> serve)
    {
        var listener = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        listener.Listen(512);
        return new ProxyTarget(listener, serve, listener.LocalEndPoint!.ToString()!, null);
    }

    public static ProxyTarget Unix(string path, Func<Socket, Task> serve)
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(512);
        return new ProxyTarget(listener, serve, "unix:" + path, path);
    }

    public void AssertNoErrors() => Assert.True(_errors.IsEmpty, "the target failed: " + string.Join(" | ", _errors));

    public void Dispose()
    {
        _listener.Dispose();
        while (_accepted.TryDequeue(out Socket? s))
        {
            s.Dispose();
        }

        if (_path is not null)
        {
            File.Delete(_path);
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            _accepted.Enqueue(socket);
            _ = Task.Run(async () =>
            {
                try
                {
                    await _serve(socket);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    _errors.Enqueue(e);
                }
            });
        }
    }
}
