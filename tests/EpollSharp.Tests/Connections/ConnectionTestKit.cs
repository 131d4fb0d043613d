namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>Echoes what it receives; counts, and remembers each connection and how it ended.</summary>
public class EchoHandler : ConnectionHandler
{
    private long _bytesEchoed;
    private long _maxBuffered;
    private int _connected;
    private int _closed;
    private int _writePaused;
    private int _writeResumed;

    public ConcurrentQueue<Connection> Connections { get; } = new();

    public ConcurrentQueue<(ConnectionCloseReason Reason, SocketError Error)> Closes { get; } = new();

    public ConcurrentQueue<(string Option, SocketError Error)> OptionFailures { get; } = new();

    public long BytesEchoed => Interlocked.Read(ref _bytesEchoed);

    public long MaxBuffered => Interlocked.Read(ref _maxBuffered);

    public int Connected => Volatile.Read(ref _connected);

    public int Closed => Volatile.Read(ref _closed);

    public int WritePausedCount => Volatile.Read(ref _writePaused);

    public int WriteResumedCount => Volatile.Read(ref _writeResumed);

    public override void OnConnected(Connection connection)
    {
        Connections.Enqueue(connection);
        Interlocked.Increment(ref _connected);
    }

    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data)
    {
        if (connection.Write(data))
        {
            Interlocked.Add(ref _bytesEchoed, data.Length);
        }

        long buffered = connection.BufferedBytes;
        if (buffered > Interlocked.Read(ref _maxBuffered))
        {
            Interlocked.Exchange(ref _maxBuffered, buffered);
        }
    }

    public override void OnWritePaused(Connection connection)
    {
        Interlocked.Increment(ref _writePaused);
        base.OnWritePaused(connection);
    }

    public override void OnWriteResumed(Connection connection)
    {
        Interlocked.Increment(ref _writeResumed);
        base.OnWriteResumed(connection);
    }

    public override void OnSocketOptionFailed(Connection connection, string option, SocketError error) => OptionFailures.Enqueue((option, error));

    public override void OnClosed(Connection connection)
    {
        Closes.Enqueue((connection.CloseReason, connection.SocketError));
        Interlocked.Increment(ref _closed);
    }
}

/// <summary>A loop on its own thread with a listener on 127.0.0.1, port 0; collects exceptions that reach the loop.</summary>
public sealed class EchoServer : IDisposable
{
    public EchoServer(EventLoopBackend backend, ConnectionHandler handler, ListenerOptions? options = null, bool? ioUringCompletions = null)
    {
        Backends.SkipUnlessAvailable(backend);
        Loop = new EventLoop(new EventLoopOptions { Backend = backend, UnhandledExceptionHandler = Errors.Enqueue, IoUringCompletions = ioUringCompletions });
        Harness = new LoopHarness(Loop);
        Listener = ConnectionListener.Listen(Loop, new IPEndPoint(IPAddress.Loopback, 0), handler, options);
    }

    /// <summary>
    /// An echo server on io_uring with the connection layer's completion path switched on for its loop; the test is
    /// skipped, with the reason, where the kernel lacks what the path needs.
    /// </summary>
    public static EchoServer OnIoUringCompletions(ConnectionHandler handler, ListenerOptions? options = null)
    {
        var server = new EchoServer(EventLoopBackend.IoUring, handler, options, ioUringCompletions: true);
        if (server.Loop.CompletionIo is null)
        {
            server.Dispose();
            using var backend = new EpollSharp.Backends.IoUringBackend(16, 0, completions: true);
            backend.CompletionsAvailable(out string reason);
            Skip.If(true, "io_uring completions unavailable: " + reason);
        }

        return server;
    }

    public ConcurrentQueue<Exception> Errors { get; } = new();

    public EventLoop Loop { get; }

    public LoopHarness Harness { get; }

    public ConnectionListener Listener { get; }

    public IPEndPoint EndPoint => (IPEndPoint)Listener.LocalEndPoint;

    /// <summary>A blocking client with a receive timeout, so that a test never hangs.</summary>
    public Socket Connect(int receiveTimeoutMs = 10_000) => ConnectTo(EndPoint, receiveTimeoutMs);

    public static Socket ConnectTo(EndPoint endPoint, int receiveTimeoutMs = 10_000)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)
        {
            NoDelay = true,
            ReceiveTimeout = receiveTimeoutMs,
            SendTimeout = receiveTimeoutMs,
        };
        socket.Connect(endPoint);
        return socket;
    }

    public void AssertNoLoopErrors()
    {
        Assert.True(Errors.IsEmpty, "Exceptions reached the loop: " + string.Join(" | ", Errors));
    }

    public void Dispose()
    {
        Listener.Dispose();
        Harness.Dispose();
    }
}

public static class SocketTestExtensions
{
    /// <summary>Reads exactly <paramref name="count"/> bytes (blocking, with the socket's receive timeout).</summary>
    public static byte[] ReceiveExactly(this Socket socket, int count)
    {
        var buffer = new byte[count];
        int total = 0;
        while (total < count)
        {
            int n = socket.Receive(buffer, total, count - total, SocketFlags.None);
            if (n == 0)
            {
                throw new InvalidOperationException($"End of stream after {total} of {count} bytes.");
            }

            total += n;
        }

        return buffer;
    }

    /// <summary>Reads until end of stream; returns everything read.</summary>
    public static byte[] ReceiveToEnd(this Socket socket)
    {
        var stream = new System.IO.MemoryStream();
        var buffer = new byte[65536];
        while (true)
        {
            int n = socket.Receive(buffer);
            if (n == 0)
            {
                return stream.ToArray();
            }

            stream.Write(buffer, 0, n);
        }
    }

    public static async Task SendAllAsync(this Socket socket, ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = await socket.SendAsync(data, SocketFlags.None).ConfigureAwait(false);
            data = data.Slice(n);
        }
    }

    public static async Task<byte[]> ReceiveExactlyAsync(this Socket socket, int count)
    {
        var buffer = new byte[count];
        int total = 0;
        while (total < count)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(total), SocketFlags.None).ConfigureAwait(false);
            if (n == 0)
            {
                throw new InvalidOperationException($"End of stream after {total} of {count} bytes.");
            }

            total += n;
        }

        return buffer;
    }

    public static byte[] Pattern(int seed, int length)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
