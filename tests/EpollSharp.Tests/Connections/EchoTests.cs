using System.Diagnostics;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

public class EchoTests
{
    private readonly ITestOutputHelper _output;

    public EchoTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Single_client_echo_and_orderly_close(EventLoopBackend backend)
    {
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        using (Socket client = server.Connect())
        {
            byte[] hello = SocketTestExtensions.Pattern(1, 100);
            client.Send(hello);
            Assert.Equal(hello, client.ReceiveExactly(hello.Length));
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        LoopHarness.WaitUntil(() => handler.Closed == 1, "the server closes the connection");
        Assert.Equal((ConnectionCloseReason.Completed, SocketError.Success), handler.Closes.Single());
        Assert.Equal(0, server.Listener.ConnectionCount);
        server.AssertNoLoopErrors();
    }

    /// <summary>
    /// 1,000 concurrent clients, each sending 3 messages of random size from 1 byte to 1 MiB (skewed small: 85 % up to
    /// 1 KiB, 14 % up to 64 KiB, 1 % up to 1 MiB; about 30 MB each way), each echoed back and checked byte for byte.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Thousand_concurrent_clients_random_sizes_echoed_byte_for_byte(EventLoopBackend backend)
    {
        await RunManyClients(backend, TriggerMode.Level, clients: 1000, messagesPerClient: 3);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public async Task Edge_triggered_connections_echo_byte_for_byte(EventLoopBackend backend)
    {
        await RunManyClients(backend, TriggerMode.Edge, clients: 200, messagesPerClient: 3);
    }

    private async Task RunManyClients(EventLoopBackend backend, TriggerMode mode, int clients, int messagesPerClient)
    {
        var handler = new EchoHandler();
        var options = new ListenerOptions { Connection = { TriggerMode = mode } };
        using var server = new EchoServer(backend, handler, options);
        var rng = new Random(12345);
        int[][] sizes = new int[clients][];
        for (int c = 0; c < clients; c++)
        {
            sizes[c] = new int[messagesPerClient];
            for (int m = 0; m < messagesPerClient; m++)
            {
                double u = rng.NextDouble();
                sizes[c][m] = u < 0.85 ? rng.Next(1, 1025) : u < 0.99 ? rng.Next(1025, 65537) : rng.Next(65537, 1024 * 1024 + 1);
            }
        }

        sizes[0][0] = 1;
        sizes[1][0] = 1024 * 1024;
        long total = sizes.Sum(s => s.Sum(x => (long)x));
        var sw = Stopwatch.StartNew();
        Task[] tasks = Enumerable.Range(0, clients).Select(c => RunClient(server.EndPoint, c, sizes[c])).ToArray();
        Task all = Task.WhenAll(tasks);
        Task finished = await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(90)));
        Assert.True(finished == all, $"clients did not finish in 90 s: {tasks.Count(t => t.IsCompleted)} of {clients} done");
        await all;
        _output.WriteLine($"{backend} {mode}: {clients} clients, {total:N0} bytes each way in {sw.ElapsedMilliseconds} ms");
        LoopHarness.WaitUntil(() => handler.Closed == clients, "every connection closes");
        Assert.Equal(total, handler.BytesEchoed);
        Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
        Assert.Equal(clients, server.Listener.AcceptedCount);
        server.AssertNoLoopErrors();
    }

    private static async Task RunClient(IPEndPoint endPoint, int client, int[] sizes)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endPoint);
        for (int m = 0; m < sizes.Length; m++)
        {
            byte[] data = SocketTestExtensions.Pattern((client * 31) + m, sizes[m]);
            Task send = socket.SendAllAsync(data);
            byte[] echoed = await socket.ReceiveExactlyAsync(data.Length);
            await send;
            if (!data.AsSpan().SequenceEqual(echoed))
            {
                int at = 0;
                while (data[at] == echoed[at])
                {
                    at++;
                }

                throw new InvalidOperationException($"client {client} message {m} ({data.Length} bytes) differs at byte {at}");
            }
        }

        socket.Shutdown(SocketShutdown.Send);
        var tail = new byte[1];
        int n = await socket.ReceiveAsync(tail, SocketFlags.None);
        if (n != 0)
        {
            throw new InvalidOperationException($"client {client}: data after the echo");
        }
    }
}
