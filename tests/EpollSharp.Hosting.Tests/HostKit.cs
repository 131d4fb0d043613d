using System.Collections.Concurrent;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace EpollSharp.Hosting.Tests;

/// <summary>Hosts built the way an application builds them, with their log kept in memory, and blocking socket clients.</summary>
internal static class HostKit
{
    public static IEnumerable<object[]> Backends()
    {
        yield return new object[] { EventLoopBackend.Epoll };
        yield return new object[] { EventLoopBackend.Managed };

        // io_uring (its connections and listeners on the completion path where the kernel has it) where it can be set up;
        // elsewhere (an old kernel, io_uring disabled) its cases are left out.
        if (IoUringAvailable())
        {
            yield return new object[] { EventLoopBackend.IoUring };
        }
    }

    private static bool IoUringAvailable()
    {
        try
        {
            using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring });
            return true;
        }
        catch (PlatformNotSupportedException)
        {
            return false;
        }
    }

    public static void SkipUnlessLinux() => Skip.IfNot(OperatingSystem.IsLinux(), "the epoll backend and these hosts need Linux");

    /// <summary><c>Host.CreateApplicationBuilder(args)</c> (appsettings, environment, command line), logging to <paramref name="log"/> only.</summary>
    public static HostApplicationBuilder Builder(out MemoryLog log, params string[] args)
    {
        SkipUnlessLinux();
        HostApplicationBuilder builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        log = new MemoryLog();
        builder.Logging.AddProvider(log);
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        return builder;
    }

    public static Socket Connect(EndPoint endPoint, int receiveTimeoutMs = 20_000)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint is IPEndPoint ? ProtocolType.Tcp : ProtocolType.Unspecified)
        {
            ReceiveTimeout = receiveTimeoutMs,
            SendTimeout = receiveTimeoutMs,
        };
        socket.Connect(endPoint);
        return socket;
    }

    public static byte[] ReceiveExactly(this Socket socket, int count)
    {
        var buffer = new byte[count];
        int read = 0;
        while (read < count)
        {
            int n = socket.Receive(buffer, read, count - read, SocketFlags.None);
            if (n == 0)
            {
                throw new InvalidOperationException($"end of stream after {read} of {count} bytes");
            }

            read += n;
        }

        return buffer;
    }

    /// <summary>Reads until the peer closes; a reset ends the read too (<paramref name="reset"/> tells which).</summary>
    public static byte[] ReceiveToEnd(this Socket socket, out bool reset)
    {
        var all = new List<byte>();
        var buffer = new byte[16384];
        reset = false;
        while (true)
        {
            int n;
            try
            {
                n = socket.Receive(buffer);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                reset = true;
                return all.ToArray();
            }

            if (n == 0)
            {
                return all.ToArray();
            }

            all.AddRange(buffer.AsSpan(0, n).ToArray());
        }
    }

    public static byte[] Pattern(int seed, int length)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}

/// <summary>Echoes what it receives; counts what it echoed.</summary>
public sealed class TestEchoHandler : ConnectionHandler
{
    private long _bytes;

    public long BytesEchoed => Interlocked.Read(ref _bytes);

    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);

    public override void OnClosed(Connection connection) => Interlocked.Add(ref _bytes, connection.BytesSent);
}

/// <summary>A logger provider that keeps every line.</summary>
internal sealed class MemoryLog : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines.ToArray();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger : ILogger
    {
        private readonly MemoryLog _log;
        private readonly string _category;

        public Logger(MemoryLog log, string category)
        {
            _log = log;
            _category = category;
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            _log._lines.Enqueue($"{logLevel} {_category}: {formatter(state, exception)}{(exception is null ? "" : " | " + exception.GetType().Name + ": " + exception.Message)}");
        }
    }
}
