using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
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
/// With <c>--tls PATH.pfx</c> each connection is an <see cref="SslStream"/> over a <see cref="NetworkStream"/> (server
/// side, TLS 1.2 or 1.3 as the client offers), and the loop is <c>ReadAsync</c>/<c>WriteAsync</c> on it: the in-box way
/// to serve TLS, the comparison for EpollSharp's TLS on the pipe layer.
/// </summary>
internal static class Program
{
    private const string Usage = "usage: InBoxEchoServer [--host 127.0.0.1] [--port 8080] [--drain-timeout SECONDS] [--tls PATH.pfx [--tls-password PASSWORD]]\n"
        + "  --tls: serve TLS with this PKCS#12 certificate and key (SslStream); the ready line then ends in ' tls=on'";

    /// <summary>One receive buffer per connection, the size EpollSharp's connections read with and ThreadedEchoServer uses.</summary>
    private const int BufferSize = 16 * 1024;

    private static readonly object s_lock = new();
    private static readonly HashSet<Socket> s_open = new();
    private static readonly TaskCompletionSource s_allClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private static int s_running = 1; // the connections being served, plus one for the accept loop until shutdown
    private static long s_accepted;
    private static long s_bytesEchoed;
    private static volatile bool s_stopping;
    private static SslServerAuthenticationOptions? s_tls;

    private static async Task<int> Main(string[] args)
    {
        IPAddress host = IPAddress.Loopback;
        int port = 8080;
        TimeSpan drain = TimeSpan.FromSeconds(5);
        string? tlsPath = null;
        string? tlsPassword = null;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string? value = i + 1 < args.Length ? args[++i] : null;
            bool ok = name switch
            {
                "--host" => IPAddress.TryParse(value, out host!),
                "--port" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port <= 65535,
                "--drain-timeout" => TryParseSeconds(value, out drain),
                "--tls" => (tlsPath = value) is { Length: > 0 },
                "--tls-password" => (tlsPassword = value) is not null,
                _ => false,
            };
            if (!ok)
            {
                Console.Error.WriteLine($"bad option {name} {value}");
                Console.Error.WriteLine(Usage);
                return 2;
            }
        }

        if (tlsPassword is not null && tlsPath is null)
        {
            Console.Error.WriteLine("--tls-password needs --tls PATH.pfx");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        if (tlsPath is not null)
        {
            if (LoadCertificate(tlsPath, tlsPassword) is not { } certificate)
            {
                return 2;
            }

            // The chain is built once, here, instead of in every handshake.
            s_tls = new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true),
            };
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
        Console.WriteLine($"listening on {listener.LocalEndPoint} backend=inbox-async loops=0{(s_tls is null ? "" : " tls=on")}");

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
            _ = s_tls is null ? ServeAsync(socket) : ServeTlsAsync(socket, s_tls);
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
            Finished(socket, echoed);
        }
    }

    /// <summary>The echo over TLS: an <see cref="SslStream"/> over the socket, <c>ReadAsync</c> then <c>WriteAsync</c> of what was read.</summary>
    private static async Task ServeTlsAsync(Socket socket, SslServerAuthenticationOptions options)
    {
        byte[] buffer = new byte[BufferSize];
        long echoed = 0;
        try
        {
            using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false), leaveInnerStreamOpen: false);
            await tls.AuthenticateAsServerAsync(options, CancellationToken.None).ConfigureAwait(false);
            while (true)
            {
                int n = await tls.ReadAsync(buffer.AsMemory(), CancellationToken.None).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await tls.WriteAsync(buffer.AsMemory(0, n), CancellationToken.None).ConfigureAwait(false);
                echoed += n;
            }

            // The peer finished (close_notify or end of stream), or the server is shutting down: finish our side too.
            await tls.ShutdownAsync().ConfigureAwait(false);
            TryShutdown(socket, SocketShutdown.Send);
        }
        catch (Exception e) when (e is IOException or AuthenticationException or SocketException or ObjectDisposedException)
        {
            // A failed handshake, a reset, or closed by force at the drain deadline.
        }
        finally
        {
            Finished(socket, echoed);
        }
    }

    /// <summary>A connection is over: its bytes go to the totals, its socket leaves the open set and is closed.</summary>
    private static void Finished(Socket socket, long echoed)
    {
        Interlocked.Add(ref s_bytesEchoed, echoed);
        lock (s_lock)
        {
            s_open.Remove(socket);
        }

        socket.Dispose();
        ConnectionEnded();
    }

    /// <summary>The certificate and key of <c>--tls</c>; null (after a message on stderr) when the file cannot serve.</summary>
    private static X509Certificate2? LoadCertificate(string path, string? password)
    {
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"--tls: '{path}' does not exist (or is not a file).");
            return null;
        }

        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(path, password);
        }
        catch (CryptographicException e)
        {
            Console.Error.WriteLine($"--tls: '{path}' cannot be loaded as PKCS#12 with the given --tls-password: {e.Message.TrimEnd('.')} (a wrong or missing password, or not a .pfx file)");
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"--tls: '{path}' cannot be read: {e.Message}");
            return null;
        }

        if (!certificate.HasPrivateKey)
        {
            certificate.Dispose();
            Console.Error.WriteLine($"--tls: '{path}' holds no private key: the server needs the certificate's key too.");
            return null;
        }

        return certificate;
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
