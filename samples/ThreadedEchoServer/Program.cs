using System;
using System.Collections.Generic;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;

namespace ThreadedEchoServer;

/// <summary>
/// The thread-per-connection design: one thread accepts, and each connection gets a thread of its own that blocks in
/// receive and send. Done with care: it echoes until the peer closes (not just one read), sends every byte, survives
/// resets, backs off instead of spinning when descriptors run out, and shuts down gracefully on SIGINT/SIGTERM: it stops
/// accepting, lets each connection echo what has already arrived, then closes it; a connection still busy when the
/// drain deadline passes is closed by force.
/// </summary>
internal static class Program
{
    private const string Usage = "usage: ThreadedEchoServer [--host 127.0.0.1] [--port 8080] [--drain-timeout SECONDS] [--max-connections N]";

    /// <summary>
    /// Memory mappings one connection's thread costs the process: its stack and guard page, and the runtime's alternate
    /// signal stack and its guard page (measured on Linux x86-64: 4.0 per thread).
    /// </summary>
    private const int MappingsPerThread = 4;

    /// <summary>Mappings and descriptors left for the runtime itself (its libraries, heaps, listener, stdio).</summary>
    private const int ProcessReserve = 2048;

    /// <summary>
    /// Each thread reserves this much address space for its stack (the default is 8 MiB on Linux). Only the touched pages
    /// use memory either way; a small reservation lets tens of thousands of threads exist without exhausting address space.
    /// </summary>
    private const int StackSize = 256 * 1024;

    private static readonly object s_lock = new();
    private static readonly HashSet<Socket> s_open = new();
    private static readonly CountdownEvent s_running = new(1);
    private static SemaphoreSlim s_slots = null!;
    private static long s_accepted;
    private static long s_bytesEchoed;
    private static volatile bool s_stopping;

    private static int Main(string[] args)
    {
        IPAddress host = IPAddress.Loopback;
        int port = 8080;
        TimeSpan drain = TimeSpan.FromSeconds(5);
        int maxConnections = DefaultMaxConnections();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string? value = i + 1 < args.Length ? args[++i] : null;
            bool ok = name switch
            {
                "--host" => IPAddress.TryParse(value, out host!),
                "--port" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port <= 65535,
                "--drain-timeout" => TryParseSeconds(value, out drain),
                "--max-connections" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out maxConnections) && maxConnections > 0,
                _ => false,
            };
            if (!ok)
            {
                Console.Error.WriteLine($"bad option {name} {value}");
                Console.Error.WriteLine(Usage);
                return 2;
            }
        }

        s_slots = new SemaphoreSlim(maxConnections, maxConnections);
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
            return 1;
        }

        var stop = new ManualResetEventSlim();
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
        {
            context.Cancel = true;
            stop.Set();
        });
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            stop.Set();
        });

        var acceptor = new Thread(() => AcceptLoop(listener)) { Name = "acceptor", IsBackground = true };
        acceptor.Start();
        Console.WriteLine($"listening on {listener.LocalEndPoint} backend=threads loops=0");
        Console.WriteLine($"max-connections={maxConnections}");

        stop.Wait();
        s_stopping = true;
        listener.Dispose();
        acceptor.Join();

        // Each connection echoes what has already arrived, then reads end of stream: shutdown(SHUT_RD) lets a blocked
        // receive return the queued bytes and then 0.
        lock (s_lock)
        {
            foreach (Socket socket in s_open)
            {
                TryShutdown(socket, SocketShutdown.Receive);
            }
        }

        s_running.Signal();
        if (!s_running.Wait(drain))
        {
            lock (s_lock)
            {
                foreach (Socket socket in s_open)
                {
                    socket.Dispose();
                }
            }

            s_running.Wait(TimeSpan.FromSeconds(10));
        }

        Console.WriteLine($"stats: connections={Interlocked.Read(ref s_accepted)} bytes={Interlocked.Read(ref s_bytesEchoed)} allocated={GC.GetTotalAllocatedBytes(true)}");
        return 0;
    }

    private static void AcceptLoop(Socket listener)
    {
        int backoffMs = 10;
        while (!s_stopping)
        {
            // At the cap, accept nothing more until a connection ends: later clients wait in the listen backlog (and
            // past it, their connects time out) instead of the process running out of threads.
            while (!s_slots.Wait(100))
            {
                if (s_stopping)
                {
                    return;
                }
            }

            Socket socket;
            try
            {
                socket = listener.Accept();
                backoffMs = 10;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                // Out of descriptors or memory: wait for some to come free instead of spinning on the error.
                s_slots.Release();
                Thread.Sleep(backoffMs);
                backoffMs = Math.Min(backoffMs * 2, 1000);
                continue;
            }
            catch (SocketException) when (!s_stopping)
            {
                s_slots.Release();
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

            s_running.AddCount();
            try
            {
                new Thread(Serve, StackSize) { IsBackground = true }.Start(socket);
            }
            catch (OutOfMemoryException)
            {
                // No thread to be had: refuse this connection rather than take the process down.
                Forget(socket);
            }
        }
    }

    private static void Serve(object? state)
    {
        var socket = (Socket)state!;
        var buffer = new byte[16 * 1024];
        long echoed = 0;
        try
        {
            while (true)
            {
                int n = socket.Receive(buffer, 0, buffer.Length, SocketFlags.None);
                if (n == 0)
                {
                    break;
                }

                // A blocking send returns once every byte is in the kernel.
                socket.Send(buffer, 0, n, SocketFlags.None);
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
            Forget(socket);
        }
    }

    private static void Forget(Socket socket)
    {
        lock (s_lock)
        {
            s_open.Remove(socket);
        }

        socket.Dispose();
        s_slots.Release();
        s_running.Signal();
    }

    /// <summary>
    /// The most connections this process can serve with a thread each: the smaller of the descriptor limit and the
    /// kernel's limit on memory mappings (<c>vm.max_map_count</c>, 65,530 by default, so about 16,000 threads), both less
    /// a reserve for the runtime. Past the mapping limit the runtime cannot create a thread and the process aborts (no
    /// exception reaches managed code), losing every connection it held; this cap keeps it below that.
    /// </summary>
    private static int DefaultMaxConnections()
    {
        int cap = int.MaxValue;
        if (ReadLimit("/proc/sys/vm/max_map_count", line => line) is long maps)
        {
            cap = (int)Math.Min(cap, Math.Max(1, (maps - ProcessReserve) / MappingsPerThread));
        }

        // "Max open files            20000                20000                files"
        if (ReadLimit("/proc/self/limits", line => line.StartsWith("Max open files", StringComparison.Ordinal)
                ? line.Substring("Max open files".Length).TrimStart().Split(' ')[0]
                : null) is long files)
        {
            cap = (int)Math.Min(cap, Math.Max(1, files - 64));
        }

        return cap == int.MaxValue ? 10_000 : cap;
    }

    private static long? ReadLimit(string path, Func<string, string?> pick)
    {
        try
        {
            foreach (string line in System.IO.File.ReadLines(path))
            {
                if (pick(line) is string text && long.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long value))
                {
                    return value;
                }
            }
        }
        catch (Exception e) when (e is System.IO.IOException or UnauthorizedAccessException)
        {
        }

        return null;
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
