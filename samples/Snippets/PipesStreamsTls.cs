using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp;
using EpollSharp.Connections;

namespace Snippets;

/// <summary>
/// Pipes, streams and TLS (docs/articles/pipes-streams-tls.md). Each method runs on 127.0.0.1 with a
/// PipeConnectionHandler server and checks what it shows: every byte of an echo, a FlushAsync held back by a reader
/// that does not read, a graceful shutdown, the loop thread, the negotiated ALPN, a failed handshake.
/// </summary>
internal static class PipesStreamsTls
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    private static readonly IPEndPoint AnyPort = new(IPAddress.Loopback, 0);

    #region pipe-echo
    // The application: one call per connection, on the thread pool by default. It reads what the input pipe holds,
    // writes it back, tells the pipe what it consumed, and flushes (the flush is where output backpressure waits).
    private static async Task Echo(PipeConnection connection)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;

        // A graceful server shutdown asks the application to finish: here, by canceling the pending read.
        using CancellationTokenRegistration onShutdown = connection.ConnectionClosedRequested.Register(() => input.CancelPendingRead());
        while (true)
        {
            ReadResult result = await input.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                output.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);                 // everything read was consumed
            FlushResult flush = await output.FlushAsync();      // waits while the output is at its pause threshold
            if (result.IsCompleted || result.IsCanceled || flush.IsCompleted)
            {
                return;                                         // returning completes both pipes: a graceful close
            }
        }
    }
    #endregion

    /// <summary>A pipe echo server, and a pipe client that sends 1 MiB and checks every byte of the echo.</summary>
    public static void RunPipeEcho() => RunPipeEchoCore().GetAwaiter().GetResult();

    private static async Task RunPipeEchoCore()
    {
        #region pipe-listen
        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new PipeConnectionHandler(Echo));
        Task stopped = loop.Start();
        #endregion

        EndPoint endPoint = listener.LocalEndPoint;
        byte[] received;
        #region pipe-client
        byte[] payload = new byte[1024 * 1024];
        Random.Shared.NextBytes(payload);
        PipeConnection client = await PipeConnection.ConnectAsync(loop, endPoint);   // returns once connected

        // Write and read at the same time: the echo comes back while we are still sending.
        Task sending = Task.Run(async () =>
        {
            for (int offset = 0; offset < payload.Length; offset += 64 * 1024)
            {
                await client.Transport.Output.WriteAsync(payload.AsMemory(offset, 64 * 1024));   // write + flush
            }
        });

        var echo = new MemoryStream();
        while (echo.Length < payload.Length)
        {
            ReadResult result = await client.Transport.Input.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                echo.Write(segment.Span);
            }

            client.Transport.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;                                          // the server closed early
            }
        }

        await sending;
        await client.DisposeAsync();   // completes both pipes (FIN) and returns when the connection has closed
        received = echo.ToArray();
        #endregion

        Console.WriteLine($"echoed {received.Length:N0} bytes through the pipes");
        Program.Check(received.AsSpan().SequenceEqual(payload), "every byte of the 1 MiB echo");
        loop.Stop();
        await stopped;
    }

    /// <summary>A client that reads nothing: the application's FlushAsync stops completing; when it reads, all arrives.</summary>
    public static void RunOutputBackpressure() => RunOutputBackpressureCore().GetAwaiter().GetResult();

    private static async Task RunOutputBackpressureCore()
    {
        const int Total = 8 * 1024 * 1024;
        const int Chunk = 16 * 1024;
        long flushed = 0;

        #region output-backpressure
        // The application writes 8 MiB in 16 KiB pieces and counts what its FlushAsync calls let through.
        var options = new PipeConnectionOptions
        {
            OutputPauseThreshold = 64 * 1024,    // the defaults, spelled out: FlushAsync waits at 64 KiB unsent in the pipe
            OutputResumeThreshold = 32 * 1024,   // ... and completes again below 32 KiB
        };
        var handler = new PipeConnectionHandler(
            async connection =>
            {
                PipeWriter output = connection.Transport.Output;
                for (int offset = 0; offset < Total; offset += Chunk)
                {
                    Memory<byte> memory = output.GetMemory(Chunk);
                    for (int i = 0; i < Chunk; i++)
                    {
                        memory.Span[i] = (byte)(offset + i);
                    }

                    output.Advance(Chunk);
                    await output.FlushAsync();
                    Interlocked.Exchange(ref flushed, offset + Chunk);
                }
            },
            options);

        // Small socket buffers on both sides, so that the kernel does not hide the effect (the defaults grow to MiBs).
        var listenerOptions = new ListenerOptions { Connection = { SocketSendBufferSize = 64 * 1024 } };
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler, listenerOptions);
        Task stopped = loop.Start();

        #region slow-reader
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 64 * 1024 };
        client.Connect(listener.LocalEndPoint);

        // Read nothing until the application's flushes stop advancing.
        long last = -1;
        while (Interlocked.Read(ref flushed) != last)
        {
            last = Interlocked.Read(ref flushed);
            await Task.Delay(200);
        }

        Console.WriteLine($"the reader reads nothing: the application's FlushAsync waits after {last:N0} of {Total:N0} bytes");
        #endregion

        Program.Check(last > 0 && last < 1024 * 1024, "the flushes stalled under 1 MiB although 8 MiB were to be written");

        var buffer = new byte[64 * 1024];
        long received = 0;
        int n;
        client.ReceiveTimeout = 10_000;
        while ((n = client.Receive(buffer)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != (byte)(received + i))
                {
                    throw new InvalidOperationException($"check failed: byte {received + i} differs");
                }
            }

            received += n;
        }

        Console.WriteLine($"then the reader read {received:N0} bytes, every one in order; the flushes reached {Interlocked.Read(ref flushed):N0}");
        Program.Check(received == Total && Interlocked.Read(ref flushed) == Total, "all 8 MiB arrived once the client read");
        loop.Stop();
        await stopped;
    }

    /// <summary>An application that reads nothing: the loop stops reading the socket at InputPauseThreshold; then all arrives.</summary>
    public static void RunInputBackpressure() => RunInputBackpressureCore().GetAwaiter().GetResult();

    private static async Task RunInputBackpressureCore()
    {
        const int Total = 4 * 1024 * 1024;
        var go = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource<PipeConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        long consumed = 0;
        bool inOrder = true;

        #region input-backpressure
        var options = new PipeConnectionOptions
        {
            InputPauseThreshold = 64 * 1024,     // stop reading the socket at 64 KiB unread (default 1 MiB)
            InputResumeThreshold = 32 * 1024,    // read again below 32 KiB (default 512 KiB)
        };
        var handler = new PipeConnectionHandler(
            async connection =>
            {
                started.SetResult(connection);
                await go.Task;                                   // reads nothing for a while
                PipeReader input = connection.Transport.Input;
                while (true)
                {
                    ReadResult result = await input.ReadAsync();
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        for (int i = 0; i < segment.Length; i++)
                        {
                            inOrder &= segment.Span[i] == (byte)(consumed + i);
                        }

                        consumed += segment.Length;
                    }

                    input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        return;
                    }
                }
            },
            options);
        var listenerOptions = new ListenerOptions
        {
            Connection =
            {
                ReceiveBufferSize = 16 * 1024,          // one read of the loop: 16 KiB
                SocketReceiveBufferSize = 64 * 1024,    // a small kernel buffer, so that TCP holds the client back soon
            },
        };
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler, listenerOptions);
        Task stopped = loop.Start();

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendBufferSize = 64 * 1024 };
        client.Connect(listener.LocalEndPoint);
        byte[] payload = new byte[Total];
        for (int i = 0; i < Total; i++)
        {
            payload[i] = (byte)i;
        }

        Task sending = Task.Run(() =>
        {
            client.Send(payload);                               // blocks while the server does not read
            client.Shutdown(SocketShutdown.Send);
        });
        PipeConnection connection = await started.Task.WaitAsync(Limit);

        #region input-stalled
        // The client keeps sending; the loop has read what the pipe may hold, then paused the socket.
        long last = -1;
        while (connection.Connection.BytesReceived != last)
        {
            last = connection.Connection.BytesReceived;
            await Task.Delay(200);
        }

        Console.WriteLine($"the application reads nothing: the loop stopped reading the socket after {last:N0} bytes");
        #endregion

        Program.Check(last >= 64 * 1024 && last <= (64 + 16) * 1024, "the loop read the pause threshold, plus at most one read");
        Program.Check(!sending.IsCompleted, "the client is held back by TCP");
        go.SetResult(true);
        await sending.WaitAsync(Limit);
        await connection.ConnectionClosed.WhenCanceled(Limit);
        Console.WriteLine($"then the application read {Volatile.Read(ref consumed):N0} bytes, in order: {Volatile.Read(ref inOrder)}");
        Program.Check(Volatile.Read(ref consumed) == Total && Volatile.Read(ref inOrder), "all 4 MiB arrived once the application read");
        loop.Stop();
        await stopped;
    }

    private static async Task WhenCanceled(this CancellationToken token, TimeSpan limit)
    {
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        using (token.Register(() => done.TrySetResult(true)))
        {
            await done.Task.WaitAsync(limit);
        }
    }

    /// <summary>A graceful server shutdown: ConnectionClosedRequested ends the echo's pending read; the client sees end of stream.</summary>
    public static void RunShutdown() => RunShutdownCore().GetAwaiter().GetResult();

    private static async Task RunShutdownCore()
    {
        using var loop = new EventLoop();
        var closed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var listener = ConnectionListener.Listen(
            loop,
            AnyPort,
            new PipeConnectionHandler(connection =>
            {
                connection.ConnectionClosed.Register(() => closed.TrySetResult(true));   // fires after the close, pipes completed
                return Echo(connection);
            }));
        Task stopped = loop.Start();

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
        client.Connect(listener.LocalEndPoint);
        client.Send(Encoding.ASCII.GetBytes("hello"));
        var buffer = new byte[16];
        int n = client.Receive(buffer);
        Program.Check(Encoding.ASCII.GetString(buffer, 0, n) == "hello", "the echo before the shutdown");

        var watch = Stopwatch.StartNew();
        #region shutdown
        // ConnectionClosedRequested fires; the echo's pending ReadAsync returns IsCanceled, the echo returns, and the
        // connection closes gracefully: FIN, then it waits for the peer's FIN. One still open after 5 s is reset.
        Task shutdown = listener.ShutdownAsync(TimeSpan.FromSeconds(5));
        #endregion

        int end = client.Receive(buffer);                       // 0: the server's FIN, not a reset
        client.Close();                                         // our FIN: the connection is closed on both sides
        await shutdown.WaitAsync(Limit);
        Console.WriteLine($"the client saw end of stream ({end} bytes); shutdown took {watch.ElapsedMilliseconds} ms");
        Program.Check(end == 0, "the client sees end of stream (FIN), not a reset");
        Program.Check(closed.Task.Wait(Limit), "ConnectionClosed fired");
        Program.Check(watch.ElapsedMilliseconds < 4000, "the application finished before the drain deadline");
        listener.Dispose();
        loop.Stop();
        await stopped;
    }

    /// <summary>RunContinuationsOnLoop: the application's awaits on the pipes come back to the loop thread; CPU work goes to Task.Run.</summary>
    public static void RunOnLoop() => RunOnLoopCore().GetAwaiter().GetResult();

    private static async Task RunOnLoopCore()
    {
        var offLoop = new ConcurrentQueue<string>();

        #region on-loop
        var options = new PipeConnectionOptions { RunContinuationsOnLoop = true };
        var handler = new PipeConnectionHandler(
            async connection =>
            {
                EventLoop loop = connection.Connection.Loop;
                PipeReader input = connection.Transport.Input;
                while (true)
                {
                    ReadResult result = await input.ReadAsync();             // resumes on the loop thread
                    if (!loop.IsOnLoopThread) offLoop.Enqueue("after ReadAsync");
                    byte[] request = result.Buffer.ToArray();
                    input.AdvanceTo(result.Buffer.End);

                    // Never block here: every connection of the loop would wait. CPU-bound work goes to the pool,
                    // and the await brings the application back to the loop.
                    byte[] answer = await Task.Run(() => Encoding.ASCII.GetBytes(Encoding.ASCII.GetString(request).ToUpperInvariant()));
                    if (!loop.IsOnLoopThread) offLoop.Enqueue("after Task.Run");

                    await connection.Transport.Output.WriteAsync(answer);   // write + flush, on the loop
                    if (result.IsCompleted)
                    {
                        return;
                    }
                }
            },
            options);
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler);
        Task stopped = loop.Start();

        using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 })
        {
            client.Connect(listener.LocalEndPoint);
            var buffer = new byte[64];
            foreach (string word in new[] { "one", "two", "three" })
            {
                client.Send(Encoding.ASCII.GetBytes(word));
                int n = client.Receive(buffer);
                string reply = Encoding.ASCII.GetString(buffer, 0, n);
                Console.WriteLine($"{word} -> {reply}");
                Program.Check(reply == word.ToUpperInvariant(), "the answer computed on the pool, written from the loop");
            }
        }

        Program.Check(offLoop.IsEmpty, "every continuation ran on the loop thread: " + string.Join(", ", offLoop));
        loop.Stop();
        await stopped;
    }

    #region stream-echo
    // Code written against Stream: AsStream() is a duplex Stream over the connection's pipes.
    private static async Task StreamEcho(PipeConnection connection)
    {
        await using Stream stream = connection.AsStream();      // disposing it closes the connection gracefully
        var buffer = new byte[32 * 1024];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)        // 0: the peer's end of stream
        {
            await stream.WriteAsync(buffer.AsMemory(0, n));     // waits while the output is at its pause threshold
        }
    }
    #endregion

    /// <summary>The stream view: an echo through AsStream, 256 KiB checked byte for byte, then end of stream both ways.</summary>
    public static void RunStream() => RunStreamCore().GetAwaiter().GetResult();

    private static async Task RunStreamCore()
    {
        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, new PipeConnectionHandler(StreamEcho));
        Task stopped = loop.Start();

        byte[] payload = new byte[256 * 1024];
        Random.Shared.NextBytes(payload);
        using (var tcp = new TcpClient())
        {
            await tcp.ConnectAsync((IPEndPoint)listener.LocalEndPoint);
            NetworkStream network = tcp.GetStream();
            Task sending = Task.Run(async () =>
            {
                await network.WriteAsync(payload);
                tcp.Client.Shutdown(SocketShutdown.Send);       // our FIN: the server's ReadAsync returns 0
            });
            var echo = new MemoryStream();
            await network.CopyToAsync(echo).WaitAsync(Limit);   // until the server's FIN
            await sending;
            Console.WriteLine($"echoed {echo.Length:N0} bytes through the stream view");
            Program.Check(echo.ToArray().AsSpan().SequenceEqual(payload), "every byte of the stream echo, then end of stream");
        }

        loop.Stop();
        await stopped;
    }

    #region certificate
    // A self-signed certificate for "localhost", made at start (never a file of the repository). A real server
    // loads its certificate and key instead (X509Certificate2.CreateFromPemFile, a store, ...).
    private static X509Certificate2 MakeCertificate()
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, false));     // server authentication
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }
    #endregion

    /// <summary>TLS on both sides: a TLS pipe server, a TLS pipe client with ConnectAsync, ALPN read from Tls on both.</summary>
    public static void RunTls() => RunTlsCore().GetAwaiter().GetResult();

    private static async Task RunTlsCore()
    {
        using X509Certificate2 certificate = MakeCertificate();
        var serverSaw = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);

        #region tls-server
        var ssl = new SslServerAuthenticationOptions
        {
            ServerCertificate = certificate,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ApplicationProtocols = new List<SslApplicationProtocol> { SslApplicationProtocol.Http2, SslApplicationProtocol.Http11 },
        };
        var serverOptions = new PipeConnectionOptions { TlsServer = new TlsServerOptions(ssl) };

        // The application is called after the handshake: Transport carries the decrypted bytes, Tls says what was agreed.
        var handler = new PipeConnectionHandler(
            connection =>
            {
                TlsConnectionInfo tls = connection.Tls!;
                serverSaw.TrySetResult($"{tls.SslProtocol}, ALPN {tls.NegotiatedApplicationProtocol}, SNI {tls.TargetHostName}");
                return Echo(connection);
            },
            serverOptions);
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler);
        Task stopped = loop.Start();
        EndPoint endPoint = listener.LocalEndPoint;

        byte[] payload = new byte[256 * 1024];
        Random.Shared.NextBytes(payload);

        #region tls-client
        var clientSsl = new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",                                      // SNI, and the name the certificate must carry
            ApplicationProtocols = new List<SslApplicationProtocol> { SslApplicationProtocol.Http11 },
            // Self-signed: trust this one certificate (a real client lets the system's roots decide).
            RemoteCertificateValidationCallback = (_, cert, _, _) => cert?.GetCertHashString() == certificate.Thumbprint,
        };
        var clientOptions = new PipeConnectionOptions { TlsClient = new TlsClientOptions(clientSsl) };

        // Completes once the handshake has succeeded; faults with the handshake's exception otherwise.
        PipeConnection client = await PipeConnection.ConnectAsync(loop, endPoint, clientOptions);
        Console.WriteLine($"client: {client.Tls!.SslProtocol}, ALPN {client.Tls.NegotiatedApplicationProtocol}, cipher {client.Tls.NegotiatedCipherSuite}");
        #endregion

        Program.Check(client.Tls.NegotiatedApplicationProtocol == SslApplicationProtocol.Http11, "the client sees http/1.1 negotiated");
        Task sending = Task.Run(async () => await client.Transport.Output.WriteAsync(payload));
        var echo = new MemoryStream();
        while (echo.Length < payload.Length)
        {
            ReadResult result = await client.Transport.Input.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                echo.Write(segment.Span);
            }

            client.Transport.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }

        await sending;
        await client.DisposeAsync();                             // close_notify, then FIN
        Program.Check(serverSaw.Task.Wait(Limit), "the server's application ran");
        Console.WriteLine($"server: {serverSaw.Task.Result}; echoed {echo.Length:N0} bytes over TLS");
        Program.Check(serverSaw.Task.Result.Contains("ALPN http/1.1") && serverSaw.Task.Result.Contains("SNI localhost"), "the server sees http/1.1 and the SNI name");
        Program.Check(echo.ToArray().AsSpan().SequenceEqual(payload), "every byte of the TLS echo");
        loop.Stop();
        await stopped;
    }

    /// <summary>Failed handshakes: a client that is not TLS, one that stalls (timeout), and a client that refuses the certificate.</summary>
    public static void RunTlsFailures() => RunTlsFailuresCore().GetAwaiter().GetResult();

    private static async Task RunTlsFailuresCore()
    {
        using X509Certificate2 certificate = MakeCertificate();
        int applications = 0;

        #region tls-failed
        var failures = new ConcurrentQueue<Exception>();
        var tlsServer = new TlsServerOptions(new SslServerAuthenticationOptions { ServerCertificate = certificate })
        {
            HandshakeTimeout = TimeSpan.FromMilliseconds(500),                // default 10 s
            OnHandshakeFailed = (connection, e) =>                            // after the connection was reset
                failures.Enqueue(e),                                          // log it here: nothing else reports it
        };
        var handler = new PipeConnectionHandler(
            connection => { Interlocked.Increment(ref applications); return Echo(connection); },   // never called for those
            new PipeConnectionOptions { TlsServer = tlsServer });
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler);
        Task stopped = loop.Start();
        var watch = Stopwatch.StartNew();

        // Not TLS: an HTTP request in clear text. The server resets the connection.
        using var plain = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
        plain.Connect(listener.LocalEndPoint);
        plain.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));

        // Says nothing: the handshake timeout resets it.
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
        silent.Connect(listener.LocalEndPoint);

        while (failures.Count < 2 && watch.Elapsed < Limit)
        {
            await Task.Delay(20);
        }

        foreach (Exception e in failures)
        {
            Console.WriteLine($"server: handshake failed: {e.GetType().Name}: {e.Message}");
        }

        Program.Check(failures.Count == 2, "both failed handshakes were reported");
        Program.Check(failures.Any(e => e is TimeoutException) && failures.Any(e => e is not TimeoutException), "one timeout, one refused ClientHello");
        Program.Check(watch.ElapsedMilliseconds >= 400, "the timeout waited 500 ms");

        Exception? refused = null;
        #region tls-client-refuses
        var picky = new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, _, _, errors) => errors == SslPolicyErrors.None,   // the system's rules: self-signed is refused
        };
        try
        {
            await PipeConnection.ConnectAsync(loop, listener.LocalEndPoint, new PipeConnectionOptions { TlsClient = new TlsClientOptions(picky) });
        }
        catch (AuthenticationException e)
        {
            Console.WriteLine($"client: {e.Message}");
            refused = e;
        }
        #endregion

        Program.Check(refused is not null, "ConnectAsync faults with AuthenticationException for a refused certificate");
        await Task.Delay(100);
        Program.Check(Volatile.Read(ref applications) <= 1, "the application was not called for the failed handshakes");
        loop.Stop();
        await stopped;
    }

    /// <summary>TLS by hand over the stream view, with the SslStream overloads netstandard2.0 has.</summary>
    public static void RunTlsByHand() => RunTlsByHandCore().GetAwaiter().GetResult();

    private static async Task RunTlsByHandCore()
    {
        using X509Certificate2 certificate = MakeCertificate();

        #region tls-by-hand
        // No TlsServer here (netstandard2.0 has none): the application wraps the stream view in an SslStream itself.
        var handler = new PipeConnectionHandler(async connection =>
        {
            using var ssl = new SslStream(connection.AsStream());      // disposing it disposes the stream: a graceful close
            await ssl.AuthenticateAsServerAsync(certificate, false, SslProtocols.Tls12 | SslProtocols.Tls13, false);
            var buffer = new byte[16 * 1024];
            int n;
            while ((n = await ssl.ReadAsync(buffer, 0, buffer.Length)) > 0)
            {
                await ssl.WriteAsync(buffer, 0, n);
            }
        });
        #endregion

        using var loop = new EventLoop();
        using var listener = ConnectionListener.Listen(loop, AnyPort, handler);
        Task stopped = loop.Start();

        byte[] payload = Encoding.ASCII.GetBytes("hello over TLS by hand");
        using (var tcp = new TcpClient())
        {
            await tcp.ConnectAsync((IPEndPoint)listener.LocalEndPoint);
            using var ssl = new SslStream(tcp.GetStream(), false, (_, cert, _, _) => cert?.GetCertHashString() == certificate.Thumbprint);
            await ssl.AuthenticateAsClientAsync("localhost");
            await ssl.WriteAsync(payload);
            var echo = new byte[payload.Length];
            await ssl.ReadExactlyAsync(echo).AsTask().WaitAsync(Limit);
            Console.WriteLine($"{ssl.SslProtocol}: {Encoding.ASCII.GetString(echo)}");
            Program.Check(echo.AsSpan().SequenceEqual(payload), "every byte of the echo over SslStream by hand");
        }

        loop.Stop();
        await stopped;
    }
}
