using System;
using System.Buffers;
using System.Collections.Generic;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace InBoxTcpProxy;

/// <summary>
/// The TCP proxy a C# developer writes with what .NET has in the box, without EpollSharp: an accept loop that awaits
/// <see cref="Socket.AcceptAsync()"/>; per session <see cref="Socket.ConnectAsync(EndPoint)"/> to the target and two copy
/// loops (<c>await ReceiveAsync</c> into a 16 KiB buffer rented from the shared pool, <c>await SendAsync</c> of it), one per
/// direction. Backpressure is the await itself: a side that does not read stops its copy loop's send, so the other side
/// is no longer read. End of stream from one side is passed on with <c>Shutdown(Send)</c>; an error on one side resets
/// both (linger 0). Same command line, ready line, graceful stop and statistics line as TcpProxy.
/// </summary>
internal static class Program
{
    private const string Usage = "usage: InBoxTcpProxy --target HOST:PORT|[V6]:PORT|NAME:PORT|unix:/path [--listen 127.0.0.1:8080] [--drain-timeout SECONDS]";

    private const int BufferSize = 16 * 1024;

    private static readonly object s_lock = new();
    private static readonly HashSet<Session> s_open = new();
    private static readonly TaskCompletionSource s_allClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private static int s_running = 1; // the sessions being served, plus one for the accept loop until the stop
    private static long s_accepted;
    private static long s_bytesToTarget;
    private static long s_bytesToClient;
    private static long s_connectFailures;
    private static long s_resetsPassed;
    private static volatile bool s_stopping;
    private static EndPoint s_target = null!;

    private static async Task<int> Main(string[] args)
    {
        IPEndPoint listen = new(IPAddress.Loopback, 8080);
        EndPoint? target = null;
        TimeSpan drain = TimeSpan.FromSeconds(5);
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string? value = i + 1 < args.Length ? args[++i] : null;
            bool ok;
            try
            {
                switch (name)
                {
                    case "--listen":
                        listen = ParseEndPoint(value) as IPEndPoint ?? throw new ArgumentException("not IP:PORT");
                        ok = true;
                        break;
                    case "--target":
                        target = ParseEndPoint(value);
                        ok = true;
                        break;
                    case "--drain-timeout":
                        ok = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds) && seconds <= 3600;
                        drain = TimeSpan.FromSeconds(seconds);
                        break;
                    case "--loops": // accepted for the same command line as TcpProxy; the thread pool decides
                        ok = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out _);
                        break;
                    default:
                        ok = false;
                        break;
                }
            }
            catch (ArgumentException)
            {
                ok = false;
            }

            if (!ok)
            {
                Console.Error.WriteLine($"bad option {name} {value}");
                Console.Error.WriteLine(Usage);
                return 2;
            }
        }

        if (target is null)
        {
            Console.Error.WriteLine("--target is required.");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        s_target = target;
        Console.Error.Flush();

        var listener = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(listen);
            listener.Listen(1024);
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"cannot listen on {listen}: {e.Message}");
            listener.Dispose();
            return 1;
        }

        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
        {
            context.Cancel = true;
            stop.TrySetResult();
        });
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            stop.TrySetResult();
        });

        Task acceptLoop = AcceptLoopAsync(listener);
        Console.WriteLine($"listening on {listener.LocalEndPoint} backend=inbox-async loops=0");

        await stop.Task.ConfigureAwait(false);
        s_stopping = true;
        listener.Dispose();
        await acceptLoop.ConfigureAwait(false);

        // As TcpProxy: the target gets end of stream after what the client sent so far; its answer flows back.
        lock (s_lock)
        {
            foreach (Session session in s_open)
            {
                session.Drain();
            }
        }

        SessionEnded(); // the accept loop's count
        if (await Task.WhenAny(s_allClosed.Task, Task.Delay(drain)).ConfigureAwait(false) != s_allClosed.Task)
        {
            lock (s_lock)
            {
                foreach (Session session in s_open)
                {
                    session.Reset();
                }
            }

            await Task.WhenAny(s_allClosed.Task, Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
        }

        Console.WriteLine(
            $"stats: connections={Interlocked.Read(ref s_accepted)} bytes_to_target={Interlocked.Read(ref s_bytesToTarget)} " +
            $"bytes_to_client={Interlocked.Read(ref s_bytesToClient)} connect_failures={Interlocked.Read(ref s_connectFailures)} " +
            $"resets_passed={Interlocked.Read(ref s_resetsPassed)} allocated={GC.GetTotalAllocatedBytes(true)}");
        return 0;
    }

    private static async Task AcceptLoopAsync(Socket listener)
    {
        int backoffMs = 10;
        while (!s_stopping)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync().ConfigureAwait(false);
                backoffMs = 10;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                await Task.Delay(backoffMs).ConfigureAwait(false);
                backoffMs = Math.Min(backoffMs * 2, 1000);
                continue;
            }
            catch (SocketException) when (!s_stopping)
            {
                continue;
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref s_accepted);
            client.NoDelay = true;
            Interlocked.Increment(ref s_running);
            _ = new Session(client).RunAsync();
        }
    }

    private static void SessionEnded()
    {
        if (Interlocked.Decrement(ref s_running) == 0)
        {
            s_allClosed.TrySetResult();
        }
    }

    private static EndPoint ParseEndPoint(string? value)
    {
        if (value is null)
        {
            throw new ArgumentException("no value");
        }

        if (value.StartsWith("unix:", StringComparison.Ordinal))
        {
            return new UnixDomainSocketEndPoint(value.Substring(5));
        }

        int colon = value.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
        {
            throw new ArgumentException("not HOST:PORT");
        }

        string host = value.Substring(0, colon);
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host.Substring(1, host.Length - 2);
        }

        return IPAddress.TryParse(host, out IPAddress? address) ? new IPEndPoint(address, port) : new DnsEndPoint(host, port);
    }

    /// <summary>One proxied session: the client, the target, and a copy loop per direction.</summary>
    private sealed class Session
    {
        private readonly Socket _client;
        private Socket? _target;
        private int _reset;

        public Session(Socket client) => _client = client;

        public async Task RunAsync()
        {
            lock (s_lock)
            {
                s_open.Add(this);
            }

            try
            {
                Socket target = s_target is UnixDomainSocketEndPoint
                    ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                    : s_target is IPEndPoint ip ? new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp) : new Socket(SocketType.Stream, ProtocolType.Tcp);
                _target = target;
                try
                {
                    await target.ConnectAsync(s_target).ConfigureAwait(false);
                    if (target.AddressFamily != AddressFamily.Unix)
                    {
                        target.NoDelay = true;
                    }
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    Interlocked.Increment(ref s_connectFailures);
                    Reset();
                    return;
                }

                if (s_stopping)
                {
                    Drain();
                }

                Task up = PumpAsync(_client, target, toTarget: true);
                Task down = PumpAsync(target, _client, toTarget: false);
                await Task.WhenAll(up, down).ConfigureAwait(false);
            }
            finally
            {
                lock (s_lock)
                {
                    s_open.Remove(this);
                }

                _client.Dispose();
                _target?.Dispose();
                SessionEnded();
            }
        }

        /// <summary>Copies from one side to the other until end of stream (passed on as a half-close) or an error (resets both).</summary>
        private async Task PumpAsync(Socket from, Socket to, bool toTarget)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            long copied = 0;
            try
            {
                while (true)
                {
                    int n = await from.ReceiveAsync(buffer.AsMemory(0, BufferSize), SocketFlags.None).ConfigureAwait(false);
                    if (n == 0)
                    {
                        break;
                    }

                    int sent = 0;
                    while (sent < n)
                    {
                        sent += await to.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None).ConfigureAwait(false);
                    }

                    copied += n;
                }

                to.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (Interlocked.Exchange(ref _reset, 1) == 0)
                {
                    Interlocked.Increment(ref s_resetsPassed);
                }

                Reset();
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
                Interlocked.Add(ref toTarget ? ref s_bytesToTarget : ref s_bytesToClient, copied);
            }
        }

        /// <summary>Graceful stop: the target reads end of stream (its answer still flows back).</summary>
        public void Drain()
        {
            try
            {
                _target?.Shutdown(SocketShutdown.Send);
                _client.Shutdown(SocketShutdown.Receive);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        }

        /// <summary>Resets both sides (linger 0: RST instead of FIN); pending receives and sends end.</summary>
        public void Reset()
        {
            Abort(_client);
            if (_target is { } target)
            {
                Abort(target);
            }
        }

        private static void Abort(Socket socket)
        {
            try
            {
                socket.LingerState = new LingerOption(true, 0);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }

            socket.Dispose();
        }
    }
}
