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
    private const string Usage = "usage: ThreadedEchoServer [--host 127.0.0.1] [--port 8080] [--drain-timeout SECONDS]";

    /// <summary>
    /// Each thread reserves this much address space for its stack (the default is 8 MiB on Linux). Only the touched pages
    /// use memory either way; a small reservation lets tens of thousands of threads exist without exhausting address space.
    /// </summary>
    private const int StackSize = 256 * 1024;

    private static readonly object s_lock = new();
    private static readonly HashSet<Socket> s_open = new();
    private static readonly CountdownEvent s_running = new(1);
    private static long s_accepted;
    private static long s_bytesEchoed;
    private static volatile bool s_stopping;

    private static int Main(string[] args)
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
            Socket socket;
            try
            {
                socket = listener.Accept();
                backoffMs = 10;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                // Out of descriptors or memory: wait for some to come free instead of spinning on the error.
                Thread.Sleep(backoffMs);
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
        s_running.Signal();
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
