using System.IO;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Listeners on Unix domain sockets with default options: TCP-only options are not applied, and no connection is dropped.</summary>
public class UnixSocketTests
{
    /// <summary>A fresh socket path in the temporary folder (short enough for <c>sun_path</c>).</summary>
    public static string TempSocketPath() => Path.Combine(Path.GetTempPath(), "es-" + Guid.NewGuid().ToString("N").Substring(0, 12) + ".sock");

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_unix_socket_listener_with_default_options_serves_every_connection(EventLoopBackend backend)
    {
        string path = TempSocketPath();
        var handler = new EchoHandler();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using EventLoop loop = Backends.CreateLoop(backend, onError: errors.Enqueue);
        using var harness = new LoopHarness(loop);
        try
        {
            using var listener = ConnectionListener.Listen(loop, new UnixDomainSocketEndPoint(path), handler);
            for (int i = 0; i < 5; i++)
            {
                using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 };
                client.Connect(new UnixDomainSocketEndPoint(path));
                byte[] data = SocketTestExtensions.Pattern(i, 1000 + i);
                client.Send(data);
                Assert.True(data.AsSpan().SequenceEqual(client.ReceiveExactly(data.Length)), "the echo matches");
                client.Shutdown(SocketShutdown.Send);
                Assert.Empty(client.ReceiveToEnd());
            }

            LoopHarness.WaitUntil(() => handler.Closed == 5, "five connections close");
            Assert.Equal(5, listener.AcceptedCount);
            Assert.Equal(5, handler.Connected);
            Assert.All(handler.Closes, c => Assert.Equal(ConnectionCloseReason.Completed, c.Reason));
            Assert.Empty(handler.OptionFailures);
            Assert.Empty(errors);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(GroupAcceptMode.Auto)]
    [InlineData(GroupAcceptMode.SingleAcceptor)]
    public void A_group_of_two_loops_serves_a_unix_socket(GroupAcceptMode mode)
    {
        string path = TempSocketPath();
        var handler = new EchoHandler();
        try
        {
            using var group = new EventLoopGroup(2);
            var listeners = group.Listen(new UnixDomainSocketEndPoint(path), handler, mode: mode);
            Assert.Single(listeners);
            for (int i = 0; i < 4; i++)
            {
                using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5_000 };
                client.Connect(new UnixDomainSocketEndPoint(path));
                client.Send(new byte[] { (byte)i });
                Assert.Equal((byte)i, client.ReceiveExactly(1)[0]);
            }

            // Round-robin: both loops got connections.
            LoopHarness.WaitUntil(() => handler.Connected == 4, "four connections");
            Assert.Equal(2, handler.Connections.Select(c => c.Loop).Distinct().Count());
        }
        finally
        {
            File.Delete(path);
        }
    }
}
