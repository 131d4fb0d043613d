using System;
using System.Collections.Generic;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace InBoxEchoServer;

/// <summary>
/// The echo server a C# developer writes with what .NET has in the box, without EpollSharp: an accept loop that awaits
/// <see cref="Socket.AcceptAsync()"/>, and per connection one 16 KiB buffer and a loop of
/// <c>await socket.ReceiveAsync(Memory&lt;byte&gt;)</c> / <c>await socket.SendAsync(ReadOnlyMemory&lt;byte&gt;)</c>. .NET's
/// socket engine runs those on its own epoll thread and the thread pool. Done with the same care as the other samples: it
/// echoes until the peer closes, sends every byte, survives resets, backs off instead of spinning when descriptors run out,
/// and shuts down gracefully on SIGINT/SIGTERM (stops accepting, lets each connection echo what has already arrived, then
/// closes it; a connection still busy when the drain deadline passes is closed by force).
/// </summary>
internal static class Program
{
    private const string Usage = "usage: InBoxEchoServer [--host 127.0.0.1] [--port 8080] [--drain-timeout SECONDS]";

    /// <summary>One receive buffer per connection, the size EpollSharp's connections read with and ThreadedEchoServer uses.</summary>
    private const int BufferSize = 16 * 1024;

    private static readonly object s_lock = new();
    private static readonly HashSet<Socket> s_open = new();
    private static readonly TaskCompletionSource s_allClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private static int s_running = 1; // the connections being served, plus one for the accept loop until shutdown
    private static long s_accepted;
    private static long s_bytesEchoed;
    private static volatile bool s_stopping;

    private static async Task<int> Main(string[] args)
    {
        IPAddress host = IPAddress.Loopback;
        int port = 8080;
        TimeSpan drain = TimeSpan.FromSeconds(5);
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string? value = i + 1 < args.Length ? args[++i] : null;
            bool ok = name switch
            {
                "--host" => IPAddress.TryParse(value, out host!),
                "--port" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port <= 65535,
                "--drain-timeout" => TryParseSeconds(value, out drain),
                _ => false,
            };
            if (!ok)
            {
                Console.Error.WriteLine($"bad option {name} {value}");
                Console.Error.WriteLine(Usage);
                return 2;
            }
        }

        // Open stderr now: .NET opens the console streams lazily, and the accept loop writes to it when the process is out of
        // descriptors, which is when opening it would fail.
        Console.Error.Flush();

        var listener = new Socket(host.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(new IPEndPoint(host, port));
            listener.Listen(1024);
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"cannot listen on {host}:{port}: {e.Message}");
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

        // Each connection echoes what has already arrived, then reads end of stream: shutdown(SHUT_RD) makes a pending
        // receive return the queued bytes and then 0.
        lock (s_lock)
        {
            foreach (Socket socket in s_open)
            {
                TryShutdown(socket, SocketShutdown.Receive);
            }
        }

        ConnectionEnded(); // the accept loop's count
        if (await Task.WhenAny(s_allClosed.Task, Task.Delay(drain)).ConfigureAwait(false) != s_allClosed.Task)
        {
            lock (s_lock)
            {
                foreach (Socket socket in s_open)
                {
                    socket.Dispose();
                }
            }

            await Task.WhenAny(s_allClosed.Task, Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
        }

        Console.WriteLine($"stats: connections={Interlocked.Read(ref s_accepted)} bytes={Interlocked.Read(ref s_bytesEchoed)} allocated={GC.GetTotalAllocatedBytes(true)}");
        return 0;
    }

    private static async Task AcceptLoopAsync(Socket listener)
    {
        int backoffMs = 10;
        bool paused = false;
        while (!s_stopping)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync().ConfigureAwait(false);
                backoffMs = 10;
                if (paused)
                {
                    paused = false;
                    Console.Error.WriteLine("accept resumed");
                }
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                // Out of descriptors or memory: wait for some to come free instead of spinning on the error.
                if (!paused)
                {
                    paused = true;
                    Console.Error.WriteLine($"accept paused: error={e.SocketErrorCode}");
                }

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
            socket.NoDelay = true;
            lock (s_lock)
            {
                s_open.Add(socket);
            }

            Interlocked.Increment(ref s_running);
            _ = ServeAsync(socket);
        }
    }

    private static async Task ServeAsync(Socket socket)
    {
        Memory<byte> buffer = new byte[BufferSize];
        long echoed = 0;
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                // A stream socket's SendAsync completes when every byte is in the kernel; the loop only guards that.
                int sent = 0;
                while (sent < n)
                {
                    sent += await socket.SendAsync(buffer[sent..n], SocketFlags.None).ConfigureAwait(false);
                }

                echoed += n;
            }

            // The peer finished (or the server is shutting down): finish our side too.
            TryShutdown(socket, SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Reset by the peer, or closed by force at the drain deadline.
        }
        finally
        {
            Interlocked.Add(ref s_bytesEchoed, echoed);
            lock (s_lock)
            {
                s_open.Remove(socket);
            }

            socket.Dispose();
            ConnectionEnded();
        }
    }

    private static void ConnectionEnded()
    {
        if (Interlocked.Decrement(ref s_running) == 0)
        {
            s_allClosed.TrySetResult();
        }
    }

    private static void TryShutdown(Socket socket, SocketShutdown how)
    {
        try
        {
            socket.Shutdown(how);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    private static bool TryParseSeconds(string? value, out TimeSpan span)
    {
        bool ok = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds) && seconds <= 3600;
        span = TimeSpan.FromSeconds(ok ? seconds : 0);
        return ok;
    }
}
