using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using EpollSharp.Tests.Reliability;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The stream view of a pipe connection (<see cref="PipeConnection.AsStream"/>) and TLS on the pipe layer
/// (<c>PipeConnectionOptions.TlsServer</c> / <c>TlsClient</c>), on every backend, against .NET's SslStream and Debian's
/// <c>openssl s_client</c>, with bad peers. Each case runs once to warm up, then again between two snapshots of the
/// process (descriptors, GC handles, managed heap) that must agree: so the class runs alone.
/// </summary>
[Collection(ProcessWide.Name)]
public class TlsTests
{
    private static readonly Lazy<X509Certificate2> s_serverCertificate = new(() => MakeCertificate("localhost", serverAuth: true));
    private static readonly Lazy<X509Certificate2> s_clientCertificate = new(() => MakeCertificate("epollsharp test client", serverAuth: false));
    private static readonly Lazy<X509Certificate2> s_otherCertificate = new(() => MakeCertificate("localhost", serverAuth: true));

    private readonly ITestOutputHelper _output;

    public TlsTests(ITestOutputHelper output) => _output = output;

    private static X509Certificate2 ServerCertificate => s_serverCertificate.Value;

    private static X509Certificate2 ClientCertificate => s_clientCertificate.Value;

    /// <summary>A self-signed ECDSA P-256 certificate made here (never a file of the repository).</summary>
    private static X509Certificate2 MakeCertificate(string name, bool serverAuth)
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            new OidCollection { new Oid(serverAuth ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2") }, false));
        if (serverAuth)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddDnsName(name);
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
        }

        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>
    /// Runs <paramref name="scenario"/> once to warm up, then again between two snapshots of the process that must agree.
    /// The runtime takes GC handles of its own the first time a code path runs, and a scenario's path depends on timing
    /// (where a reset or an alert lands), so the measured run may take one the warm-up did not: when the handles grew,
    /// the scenario runs a third time, measured from the end of the second. A leak grows with every run; that does not.
    /// </summary>
    private void Measured(string what, Action scenario)
    {
        scenario();
        ResourceSnapshot baseline = ResourceSnapshot.Baseline(_output);
        scenario();
        ResourceSnapshot after = ResourceSnapshot.Take();
        if (baseline.GcHandles >= 0 && after.GcHandles > baseline.GcHandles + Resources.GcHandleSlack(baseline, after))
        {
            _output.WriteLine($"{what}: GC handles {baseline.GcHandles} -> {after.GcHandles} after the measured run; measuring a third run from here");
            baseline = ResourceSnapshot.Baseline(_output);
            scenario();
        }

        Resources.AssertBackTo(baseline, _output, what);
    }

    /// <summary>Echoes through the stream view until the peer's end of stream; disposing the stream closes the connection.</summary>
    private static async Task StreamEcho(PipeConnection connection)
    {
        await using Stream stream = connection.AsStream();
        var buffer = new byte[32 * 1024];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            await stream.WriteAsync(buffer.AsMemory(0, n));
        }
    }

    /// <summary>Sends <paramref name="data"/> on <paramref name="stream"/> from another task while this one reads the echo.</summary>
    private static async Task<byte[]> RoundTripAsync(Stream stream, byte[] data)
    {
        Task sending = Task.Run(async () =>
        {
            for (int offset = 0; offset < data.Length; offset += 60_000)
            {
                await stream.WriteAsync(data.AsMemory(offset, Math.Min(60_000, data.Length - offset)));
            }

            await stream.FlushAsync();
        });
        var echo = new byte[data.Length];
        await stream.ReadExactlyAsync(echo).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
        await sending.WaitAsync(TimeSpan.FromSeconds(10));
        return echo;
    }

    // ---------------------------------------------------------------- the stream view, no TLS

    /// <summary>Every backend, with the application's continuations on the thread pool and on the loop (where each message stays on the loop thread).</summary>
    public static IEnumerable<object[]> BackendsAndModes() => PipeConnectionTests.BackendsAndModes();

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Stream_view_echoes_every_byte_and_closes_on_dispose(EventLoopBackend backend, bool onLoop)
    {
        Measured("stream echo", () =>
        {
            using var server = new Server(backend, StreamEcho, new PipeConnectionOptions { RunContinuationsOnLoop = onLoop });
            using (Socket client = server.Connect())
            {
                int seed = 0;
                foreach (int size in new[] { 1, 100, 16 * 1024 + 1, 65536, 1024 * 1024 + 7, 4 * 1024 * 1024 })
                {
                    byte[] data = SocketTestExtensions.Pattern(seed++, size);
                    using var ns = new NetworkStream(client, ownsSocket: false);
                    Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(ns, data).GetAwaiter().GetResult()), $"echo of {size:N0} bytes differs");
                }

                client.Shutdown(SocketShutdown.Send);
                Assert.Empty(client.ReceiveToEnd());
            }

            server.AssertClosedAndClean(expectedStarts: 1);
        });
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Stream_view_read_is_canceled_by_its_token_waits_on_a_zero_byte_read_and_throws_IOException_on_reset(EventLoopBackend backend, bool onLoop)
    {
        Measured("stream cancel and reset", () =>
        {
            var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            var gotData = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var canceled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var server = new Server(backend, async c =>
            {
                Stream stream = c.AsStream();
                var buffer = new byte[100];
                try
                {
                    using (var cts = new CancellationTokenSource(100))
                    {
                        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await stream.ReadAtLeastAsync(buffer, 1, cancellationToken: cts.Token));
                    }

                    canceled.TrySetResult();

                    // A zero-byte read waits for data and takes none (SslStream reads so); then the data is all there.
                    Assert.Equal(0, await stream.ReadAsync(Memory<byte>.Empty));
                    await stream.ReadExactlyAsync(buffer.AsMemory(0, 3));
                    Assert.Equal(new byte[] { 1, 2, 3 }, buffer.AsSpan(0, 3).ToArray());
                    gotData.TrySetResult();
                    await stream.ReadAtLeastAsync(buffer, 1);
                    outcome.TrySetResult("read returned");
                }
                catch (Exception ex)
                {
                    outcome.TrySetResult(ex.GetType().Name + ": " + ex.Message);
                    if (ex is IOException)
                    {
                        throw;
                    }
                }
            }, new PipeConnectionOptions { RunContinuationsOnLoop = onLoop });
            using (Socket client = server.Connect())
            {
                Task.WhenAny(canceled.Task, outcome.Task).WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                Thread.Sleep(100);
                client.Send(new byte[] { 1, 2, 3 });
                Task.WhenAny(gotData.Task, outcome.Task).WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                client.LingerState = new LingerOption(true, 0);
                client.Close();
            }

            string result = outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            Assert.True(result.StartsWith("IOException: The connection was reset", StringComparison.Ordinal), result);
            server.AssertClosedAndClean(expectedStarts: 1);
        });
    }

    // ---------------------------------------------------------------- TLS, server side, .NET client

#if !EPOLLSHARP_NETSTANDARD2_0
    public static IEnumerable<object[]> BackendsAndProtocols()
    {
        foreach (object[] backend in Backends.All())
        {
            yield return new object[] { backend[0], SslProtocols.Tls12 };
            yield return new object[] { backend[0], SslProtocols.Tls13 };
        }
    }

    /// <summary>The server options, with the application's continuations on the loop or the thread pool.</summary>
    private static PipeConnectionOptions ServerOptions(bool onLoop)
    {
        PipeConnectionOptions options = ServerOptions();
        options.RunContinuationsOnLoop = onLoop;
        return options;
    }

    private static PipeConnectionOptions ServerOptions(Action<SslServerAuthenticationOptions>? configure = null, TimeSpan? handshakeTimeout = null, Action<PipeConnection, Exception>? failed = null)
    {
        var ssl = new SslServerAuthenticationOptions
        {
            ServerCertificate = ServerCertificate,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ApplicationProtocols = new List<SslApplicationProtocol> { SslApplicationProtocol.Http2, SslApplicationProtocol.Http11 },
        };
        configure?.Invoke(ssl);
        var tls = new TlsServerOptions(ssl) { OnHandshakeFailed = failed };
        if (handshakeTimeout is { } timeout)
        {
            tls.HandshakeTimeout = timeout;
        }

        return new PipeConnectionOptions { TlsServer = tls };
    }

    private static SslClientAuthenticationOptions ClientSsl(SslProtocols protocols, params SslApplicationProtocol[] alpn) => new()
    {
        TargetHost = "localhost",
        EnabledSslProtocols = protocols,
        ApplicationProtocols = alpn.Length == 0 ? null : alpn.ToList(),
        RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null && certificate.GetCertHashString() == ServerCertificate.Thumbprint,
    };

    [SkippableTheory]
    [MemberData(nameof(BackendsAndProtocols))]
    public void Tls_echo_with_a_dotnet_SslStream_client_every_byte_checked(EventLoopBackend backend, SslProtocols protocol)
    {
        Measured("TLS echo " + protocol, () =>
        {
            var seen = new ConcurrentQueue<TlsConnectionInfo>();
            using var server = new Server(backend, c =>
            {
                seen.Enqueue(c.Tls!);
                return StreamEcho(c);
            }, ServerOptions());
            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                ssl.AuthenticateAsClient(ClientSsl(protocol, SslApplicationProtocol.Http11));
                Assert.Equal(protocol, ssl.SslProtocol);
                int seed = 10;
                foreach (int size in new[] { 1, 5000, 16 * 1024, 16 * 1024 + 1, 1024 * 1024 + 3 })
                {
                    byte[] data = SocketTestExtensions.Pattern(seed++, size);
                    Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(ssl, data).GetAwaiter().GetResult()), $"echo of {size:N0} bytes differs");
                }

                ssl.ShutdownAsync().GetAwaiter().GetResult();
                client.Shutdown(SocketShutdown.Send);
                Assert.Equal(0, ssl.Read(new byte[1], 0, 1));
            }

            server.AssertClosedAndClean(expectedStarts: 1);
            TlsConnectionInfo info = Assert.Single(seen);
            Assert.Equal(protocol, info.SslProtocol);
            Assert.Equal(SslApplicationProtocol.Http11, info.NegotiatedApplicationProtocol);
            Assert.Equal("localhost", info.TargetHostName);
            Assert.Null(info.RemoteCertificate);
            _output.WriteLine($"{protocol}: {info.NegotiatedCipherSuite}");
        });
    }

    /// <summary>With RunContinuationsOnLoop on both sides: the application (pipes, not the stream) and the dialing caller's awaits on the loops.</summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Tls_with_the_application_on_the_loop_both_sides(EventLoopBackend backend)
    {
        Measured("TLS on the loop", () =>
        {
            PipeConnectionOptions serverOptions = ServerOptions();
            serverOptions.RunContinuationsOnLoop = true;
            var onLoop = new ConcurrentQueue<bool>();
            using var server = new Server(backend, async c =>
            {
                onLoop.Enqueue(c.Connection.Loop.IsOnLoopThread);
                await PipeConnectionTests.Echo(c);
                onLoop.Enqueue(c.Connection.Loop.IsOnLoopThread);
            }, serverOptions);
            using (var loop = new RunningLoop(backend))
            {
                var options = new PipeConnectionOptions { RunContinuationsOnLoop = true, TlsClient = new TlsClientOptions(ClientSsl(SslProtocols.Tls13)) };
                PipeConnection connection = PipeConnection.ConnectAsync(loop.Loop, server.EndPoint, options).WaitAsync(TimeSpan.FromSeconds(20)).GetAwaiter().GetResult();
                Assert.Equal(SslProtocols.Tls13, connection.Tls!.SslProtocol);
                int seed = 20;
                foreach (int size in new[] { 1, 16 * 1024 + 1, 1024 * 1024, 4 * 1024 * 1024 + 3 })
                {
                    byte[] data = SocketTestExtensions.Pattern(seed++, size);
                    Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(connection.AsStream(), data).GetAwaiter().GetResult()), $"echo of {size:N0} bytes differs");
                }

                connection.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                Assert.Equal(ConnectionCloseReason.Completed, connection.Connection.CloseReason);
                Assert.Empty(loop.Errors);
            }

            server.AssertClosedAndClean(expectedStarts: 1);
            Assert.Equal(new[] { true, true }, onLoop.ToArray());
        });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Alpn_selects_the_servers_first_protocol_the_client_offers(EventLoopBackend backend)
    {
        Measured("ALPN", () =>
        {
            var seen = new ConcurrentQueue<SslApplicationProtocol>();
            using var server = new Server(backend, c =>
            {
                seen.Enqueue(c.Tls!.NegotiatedApplicationProtocol);
                return StreamEcho(c);
            }, ServerOptions());
            foreach (SslApplicationProtocol[] offered in new[]
            {
                new[] { SslApplicationProtocol.Http11, SslApplicationProtocol.Http2 },
                new[] { SslApplicationProtocol.Http11 },
                Array.Empty<SslApplicationProtocol>(),
            })
            {
                using Socket client = server.Connect();
                using var ssl = new SslStream(new NetworkStream(client, ownsSocket: false));
                ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls13, offered));
                ssl.Write(new byte[] { 7 });
                Assert.Equal(7, ssl.ReadByte());
                client.Shutdown(SocketShutdown.Send);
                Assert.Equal(-1, ssl.ReadByte());
            }

            server.AssertClosedAndClean(expectedStarts: 3);
            Assert.Equal(new[] { SslApplicationProtocol.Http2, SslApplicationProtocol.Http11, default }, seen.ToArray());
        });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_required_client_certificate_is_checked_and_a_client_without_one_is_refused(EventLoopBackend backend)
    {
        Measured("client certificate", () =>
        {
            var seen = new ConcurrentQueue<string?>();
            var failures = new ConcurrentQueue<Exception>();
            using var server = new Server(backend, c =>
            {
                seen.Enqueue(c.Tls!.RemoteCertificate?.GetCertHashString());
                return StreamEcho(c);
            }, ServerOptions(
                ssl =>
                {
                    ssl.ClientCertificateRequired = true;
                    ssl.RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == ClientCertificate.Thumbprint;
                },
                failed: (_, ex) => failures.Enqueue(ex)));

            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                SslClientAuthenticationOptions options = ClientSsl(SslProtocols.Tls12);
                options.ClientCertificates = new X509CertificateCollection { ClientCertificate };
                ssl.AuthenticateAsClient(options);
                Assert.True(ssl.IsMutuallyAuthenticated);
                ssl.Write(new byte[] { 9 });
                Assert.Equal(9, ssl.ReadByte());
                client.Shutdown(SocketShutdown.Send);
                Assert.Equal(-1, ssl.ReadByte());
            }

            // Without a certificate (TLS 1.3: the client's handshake completes before the server has seen its certificate).
            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                try
                {
                    ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls13));
                    ssl.Write(new byte[] { 9 });
                    Assert.Equal(-1, ssl.ReadByte());
                }
                catch (Exception ex) when (ex is IOException or AuthenticationException)
                {
                    _output.WriteLine("client without a certificate: " + ex.GetType().Name + ": " + ex.Message);
                }
            }

            server.AssertClosedAndClean(expectedStarts: 1);
            Assert.Equal(ClientCertificate.Thumbprint, Assert.Single(seen));

            // Reported after the reset: the connection may be counted out a moment before.
            LoopHarness.WaitUntil(() => !failures.IsEmpty, "the failure is reported");
            Exception failure = Assert.Single(failures);
            _output.WriteLine("reported: " + failure);
        });
    }

    // ---------------------------------------------------------------- openssl s_client

    public static IEnumerable<object[]> OpensslCases()
    {
        foreach (object[] backend in Backends.All())
        {
            yield return new object[] { backend[0], "-tls1_2", "h2,http/1.1", "TLSv1.2", "h2" };
            yield return new object[] { backend[0], "-tls1_3", "http/1.1", "TLSv1.3", "http/1.1" };
            yield return new object[] { backend[0], "-tls1_3", "h2", "TLSv1.3", "h2" };
        }
    }

    [SkippableTheory]
    [MemberData(nameof(OpensslCases))]
    public void Openssl_s_client_gets_the_echo_with_the_protocol_and_alpn_it_asked_for(EventLoopBackend backend, string versionFlag, string alpn, string expectedVersion, string expectedAlpn)
    {
        Backends.SkipUnlessAvailable(backend);
        string? openssl = ProcessTools.FindOnPath("openssl");
        Skip.If(openssl is null, "openssl is not installed (.ci/run installs Debian's)");
        string line = "hello from openssl " + versionFlag + " " + Guid.NewGuid().ToString("N");
        byte[] expected = Encoding.ASCII.GetBytes(line + "\n");
        Measured("openssl " + versionFlag, () =>
        {
            var seen = new ConcurrentQueue<TlsConnectionInfo>();
            using var server = new Server(backend, async c =>
            {
                // Echo exactly one line, then close (close_notify, then FIN): s_client -ign_eof waits for that.
                seen.Enqueue(c.Tls!);
                Stream stream = c.AsStream();
                var buffer = new byte[expected.Length];
                await stream.ReadExactlyAsync(buffer);
                await stream.WriteAsync(buffer);
                await stream.DisposeAsync();
            }, ServerOptions());

            var psi = new ProcessStartInfo(openssl!)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in new[] { "s_client", "-connect", "127.0.0.1:" + server.EndPoint.Port, "-servername", "localhost", versionFlag, "-alpn", alpn, "-ign_eof" })
            {
                psi.ArgumentList.Add(arg);
            }

            using var process = Process.Start(psi)!;
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            process.StandardInput.Write(line + "\n");
            process.StandardInput.Flush();
            process.StandardInput.Close();
            Assert.True(process.WaitForExit(20_000), "s_client did not exit after the server closed");
            string output = stdout.GetAwaiter().GetResult();
            _output.WriteLine(stderr.GetAwaiter().GetResult());
            Assert.Contains(line, output);
            Assert.Contains($"New, {expectedVersion}, Cipher is ", output);
            Assert.Contains($"ALPN protocol: {expectedAlpn}", output);

            server.AssertClosedAndClean(expectedStarts: 1);
            TlsConnectionInfo info = Assert.Single(seen);
            Assert.Equal(expectedVersion == "TLSv1.3" ? SslProtocols.Tls13 : SslProtocols.Tls12, info.SslProtocol);
            Assert.Equal(expectedAlpn, info.NegotiatedApplicationProtocol.ToString());
            Assert.Equal("localhost", info.TargetHostName);
        });
    }

    // ---------------------------------------------------------------- bad peers

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Garbage_instead_of_a_ClientHello_closes_the_connection_without_calling_the_application(EventLoopBackend backend)
    {
        const int Clients = 50;
        Measured("garbage", () =>
        {
            var failures = new ConcurrentQueue<Exception>();
            using var server = new Server(backend, StreamEcho, ServerOptions(failed: (_, ex) => failures.Enqueue(ex)));
            for (int i = 0; i < Clients; i++)
            {
                using Socket client = server.Connect();
                client.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
                try
                {
                    byte[] answer = client.ReceiveToEnd();
                    Assert.True(answer.Length < 100, $"garbage: {answer.Length} bytes back");
                }
                catch (SocketException ex)
                {
                    Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
                }
            }

            server.AssertClosedAndClean(expectedStarts: 0);
            LoopHarness.WaitUntil(() => failures.Count == Clients, "every failure is reported");
            Assert.All(failures, ex => Assert.True(ex is AuthenticationException or IOException, ex.ToString()));
            _output.WriteLine("reported: " + failures.First());
        });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_client_that_stalls_in_the_handshake_is_closed_at_the_timeout_and_nothing_is_kept(EventLoopBackend backend)
    {
        const int Clients = 20;
        Measured("stalled handshakes", () =>
        {
            var failures = new ConcurrentQueue<Exception>();
            var dead = new ConcurrentQueue<WeakReference>();
            using var server = new Server(backend, StreamEcho, ServerOptions(
                handshakeTimeout: TimeSpan.FromMilliseconds(500),
                failed: (c, ex) =>
                {
                    failures.Enqueue(ex);
                    dead.Enqueue(new WeakReference(c));
                }));

            // Half a ClientHello: a handshake record header announcing 512 bytes, and 40 of them.
            var half = new byte[45];
            half[0] = 0x16;
            half[1] = 0x03;
            half[2] = 0x01;
            half[3] = 0x02;
            half[4] = 0x00;
            half[5] = 0x01;
            var clients = new List<Socket>();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < Clients; i++)
            {
                Socket client = server.Connect();
                client.Send(half);
                clients.Add(client);
            }

            foreach (Socket client in clients)
            {
                try
                {
                    Assert.Empty(client.ReceiveToEnd());
                }
                catch (SocketException ex)
                {
                    Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
                }

                client.Dispose();
            }

            TimeSpan elapsed = clock.Elapsed;
            _output.WriteLine($"{Clients} stalled handshakes closed after {elapsed.TotalMilliseconds:N0} ms");
            Assert.InRange(elapsed.TotalMilliseconds, 450, 5000);
            server.AssertClosedAndClean(expectedStarts: 0);
            LoopHarness.WaitUntil(() => failures.Count == Clients, "every failure is reported");
            Assert.All(failures, ex => Assert.IsType<TimeoutException>(ex));
            server.Dispose();

            // No PipeConnection (nor its SslStream and pipes) outlives its connection.
            LoopHarness.WaitUntil(
                () =>
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    return dead.All(w => !w.IsAlive);
                },
                "every stalled PipeConnection is collected");
        });
    }

    /// <summary>An application that reads to the end and reports how its reading ended: null at the end of the stream, else the exception (rethrown when <paramref name="rethrow"/>).</summary>
    /// <summary>
    /// An application that reads until the end of its input and reports how that ended to <paramref name="outcome"/>;
    /// <paramref name="received"/> (if given) is set once it has read bytes, which shows the server's handshake completed.
    /// </summary>
    private static Func<PipeConnection, Task> ReadToEnd(TaskCompletionSource<Exception?> outcome, bool rethrow, TaskCompletionSource? received = null) => async c =>
    {
        PipeReader input = c.Transport.Input;
        try
        {
            while (true)
            {
                ReadResult result = await input.ReadAsync();
                if (!result.Buffer.IsEmpty)
                {
                    received?.TrySetResult();
                }

                input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    outcome.TrySetResult(null);
                    return;
                }
            }
        }
        catch (Exception ex) when (!rethrow)
        {
            outcome.TrySetResult(ex);
        }
        catch (Exception ex)
        {
            outcome.TrySetResult(ex);
            throw;
        }
    };

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void A_reset_in_the_middle_of_a_record_fails_the_applications_read_with_IOException(EventLoopBackend backend, bool onLoop)
    {
        Measured("reset mid-record", () =>
        {
            var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
            var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var server = new Server(backend, ReadToEnd(outcome, rethrow: true, received), ServerOptions(onLoop));

            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls13));
                ssl.Write(new byte[1000]);

                // In TLS 1.3 the client's handshake completes before the server's (the client's Finished is the last
                // message): a reset sent now could fail the server's handshake instead, and the application never runs.
                Assert.True(received.Task.Wait(TimeSpan.FromSeconds(10)), "the application did not receive the first record");

                // An application-data record header announcing 1,000 bytes, 300 of them, then RST.
                var partial = new byte[305];
                partial[0] = 0x17;
                partial[1] = 0x03;
                partial[2] = 0x03;
                partial[3] = 0x03;
                partial[4] = 0xE8;
                client.Send(partial);
                Thread.Sleep(100);
                client.LingerState = new LingerOption(true, 0);
                client.Close();
            }

            Exception? error = outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            Assert.IsType<IOException>(error);
            Assert.StartsWith("The connection was reset", error!.Message);
            server.AssertClosedAndClean(expectedStarts: 1);
            Assert.Equal(ConnectionCloseReason.Reset, Assert.Single(server.CloseReasons));
        });
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void A_forged_record_after_the_handshake_resets_the_connection_and_fails_the_read(EventLoopBackend backend, bool onLoop)
    {
        Measured("forged record", () =>
        {
            var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
            using var server = new Server(backend, ReadToEnd(outcome, rethrow: false), ServerOptions(onLoop));

            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls12));
                ssl.Write(new byte[100]);

                // A whole application-data record of 100 bytes that were never encrypted with the session's keys.
                byte[] forged = SocketTestExtensions.Pattern(99, 105);
                forged[0] = 0x17;
                forged[1] = 0x03;
                forged[2] = 0x03;
                forged[3] = 0x00;
                forged[4] = 100;
                client.Send(forged);
                Exception? error = outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                _output.WriteLine("the application's read: " + error);
                Assert.IsAssignableFrom<IOException>(error);
                try
                {
                    client.ReceiveToEnd();
                }
                catch (SocketException ex)
                {
                    Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
                }
            }

            server.AssertClosedAndClean(expectedStarts: 1);
            Assert.Equal(ConnectionCloseReason.Aborted, Assert.Single(server.CloseReasons));
        });
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Completing_the_TLS_output_with_an_exception_resets_the_connection(EventLoopBackend backend, bool onLoop)
    {
        Measured("TLS output fault", () =>
        {
            using var server = new Server(backend, async c =>
            {
                ReadResult result = await c.Transport.Input.ReadAsync();
                c.Transport.Input.AdvanceTo(result.Buffer.End);
                await c.Transport.Output.WriteAsync(new byte[] { 42 });
                c.Transport.Output.Complete(new InvalidOperationException("the application gives up"));
                await Task.Delay(Timeout.Infinite, c.ConnectionClosed).ContinueWith(_ => { });
            }, ServerOptions(onLoop));
            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls13));
                ssl.Write(new byte[] { 1 });

                // A reset: the 42 may or may not have come before it (the pipe throws the completion's exception to its
                // reader even with bytes unread, and a reset drops what the client's kernel had not handed over).
                Assert.Throws<IOException>(() =>
                {
                    while (ssl.ReadByte() is 42)
                    {
                    }
                });
            }

            server.AssertClosedAndClean(expectedStarts: 1);
            Assert.Equal(ConnectionCloseReason.Aborted, Assert.Single(server.CloseReasons));
        });
    }

    [SkippableTheory]
    [MemberData(nameof(BackendsAndModes))]
    public void Sixteen_MiB_each_way_through_TLS(EventLoopBackend backend, bool onLoop)
    {
        Measured("16 MiB TLS", () =>
        {
            using var server = new Server(backend, StreamEcho, ServerOptions(onLoop));
            byte[] data = SocketTestExtensions.Pattern(16, 16 * 1024 * 1024);
            using (Socket client = server.Connect(receiveTimeoutMs: 60_000))
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false)))
            {
                ssl.AuthenticateAsClient(ClientSsl(SslProtocols.Tls13));
                var clock = Stopwatch.StartNew();
                byte[] echo = RoundTripAsync(ssl, data).GetAwaiter().GetResult();
                _output.WriteLine($"16 MiB each way in {clock.ElapsedMilliseconds} ms");
                Assert.True(data.AsSpan().SequenceEqual(echo), "the echo differs");
                client.Shutdown(SocketShutdown.Send);
                Assert.Equal(-1, ssl.ReadByte());
            }

            server.AssertClosedAndClean(expectedStarts: 1);
        });
    }

    // ---------------------------------------------------------------- the dial side

    [SkippableTheory]
    [MemberData(nameof(BackendsAndProtocols))]
    public void ConnectAsync_with_TLS_to_a_dotnet_SslStream_server(EventLoopBackend backend, SslProtocols protocol)
    {
        Measured("dial TLS " + protocol, () =>
        {
            using var loop = new RunningLoop(backend);
            using Socket listener = RunningLoop.PlainListener(backlog: 4);
            var serverSide = Task.Run(async () =>
            {
                using Socket peer = await listener.AcceptAsync();
                await using var ssl = new SslStream(new NetworkStream(peer, ownsSocket: false));
                await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
                {
                    ServerCertificate = ServerCertificate,
                    EnabledSslProtocols = protocol,
                    ApplicationProtocols = new List<SslApplicationProtocol> { SslApplicationProtocol.Http2 },
                });
                var buffer = new byte[65536];
                int n;
                while ((n = await ssl.ReadAsync(buffer)) > 0)
                {
                    await ssl.WriteAsync(buffer.AsMemory(0, n));
                }

                await ssl.ShutdownAsync();
                peer.Shutdown(SocketShutdown.Send);
            });

            var options = new PipeConnectionOptions { TlsClient = new TlsClientOptions(ClientSsl(protocol, SslApplicationProtocol.Http2, SslApplicationProtocol.Http11)) };
            PipeConnection connection = PipeConnection.ConnectAsync(loop.Loop, listener.LocalEndPoint!, options).WaitAsync(TimeSpan.FromSeconds(20)).GetAwaiter().GetResult();
            Assert.NotNull(connection.Tls);
            Assert.Equal(protocol, connection.Tls!.SslProtocol);
            Assert.Equal(SslApplicationProtocol.Http2, connection.Tls.NegotiatedApplicationProtocol);
            Assert.Equal(ServerCertificate.Thumbprint, connection.Tls.RemoteCertificate!.GetCertHashString());
            Stream stream = connection.AsStream();
            byte[] data = SocketTestExtensions.Pattern(5, 2 * 1024 * 1024 + 1);
            Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(stream, data).GetAwaiter().GetResult()), "the echo differs");
            connection.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            serverSide.WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            Assert.Equal(ConnectionCloseReason.Completed, connection.Connection.CloseReason);
            Assert.Empty(loop.Errors);
        });
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void ConnectAsync_with_TLS_to_our_own_TLS_server_and_a_refused_certificate_fails_the_task(EventLoopBackend backend)
    {
        Measured("dial own TLS", () =>
        {
            using var server = new Server(backend, StreamEcho, ServerOptions());
            using (var loop = new RunningLoop(backend))
            {
                var options = new PipeConnectionOptions { TlsClient = new TlsClientOptions(ClientSsl(SslProtocols.Tls13, SslApplicationProtocol.Http11)) };
                PipeConnection connection = PipeConnection.ConnectAsync(loop.Loop, server.EndPoint, options).WaitAsync(TimeSpan.FromSeconds(20)).GetAwaiter().GetResult();
                Assert.Equal(SslApplicationProtocol.Http11, connection.Tls!.NegotiatedApplicationProtocol);
                byte[] data = SocketTestExtensions.Pattern(6, 300_000);
                Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(connection.AsStream(), data).GetAwaiter().GetResult()), "the echo differs");
                connection.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                Assert.Equal(ConnectionCloseReason.Completed, connection.Connection.CloseReason);

                // A client that trusts another certificate: the task fails with the handshake's exception.
                SslClientAuthenticationOptions picky = ClientSsl(SslProtocols.Tls13);
                picky.RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == s_otherCertificate.Value.Thumbprint;
                var failed = new ConcurrentQueue<Exception>();
                var refusing = new PipeConnectionOptions { TlsClient = new TlsClientOptions(picky) { OnHandshakeFailed = (_, ex) => failed.Enqueue(ex) } };
                Exception error = Assert.ThrowsAny<Exception>(() => PipeConnection.ConnectAsync(loop.Loop, server.EndPoint, refusing).WaitAsync(TimeSpan.FromSeconds(20)).GetAwaiter().GetResult());
                Assert.IsType<AuthenticationException>(error);
                Assert.Same(error, Assert.Single(failed));
                Assert.Empty(loop.Errors);
            }

            // One or two: .NET's client checks the server's certificate after the handshake's messages, so the server's
            // handshake may well have succeeded (its application then runs until the client closes) or seen the alert first.
            server.AssertClosedAndClean(expectedStarts: 1, maxStarts: 2);
        });
    }

    [Fact]
    public void Tls_options_are_checked()
    {
        Assert.Throws<ArgumentNullException>(() => new TlsServerOptions(null!));
        Assert.Throws<ArgumentNullException>(() => new TlsClientOptions(null!));
        var tls = new TlsServerOptions(new SslServerAuthenticationOptions());
        Assert.Equal(TimeSpan.FromSeconds(10), tls.HandshakeTimeout);
        Assert.Throws<ArgumentOutOfRangeException>(() => tls.HandshakeTimeout = TimeSpan.Zero);
        tls.HandshakeTimeout = Timeout.InfiniteTimeSpan;

        // No server certificate: refused when the handler is made.
        Assert.Throws<ArgumentException>(() => new PipeConnectionHandler(StreamEcho, new PipeConnectionOptions { TlsServer = tls }));
    }
#endif

    // ---------------------------------------------------------------- netstandard2.0: TLS by hand over the stream view

    /// <summary>
    /// The netstandard2.0 build has no TlsServer / TlsClient (no SslServerAuthenticationOptions there): an application
    /// wraps the stream view in an SslStream itself. Runs on every build; on netstandard2.0 it is the TLS path.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void Tls_by_hand_over_the_stream_view(EventLoopBackend backend)
    {
        Measured("TLS by hand", () =>
        {
            using var server = new Server(backend, async c =>
            {
                using var ssl = new SslStream(c.AsStream());
                await ssl.AuthenticateAsServerAsync(ServerCertificate, false, SslProtocols.Tls12 | SslProtocols.Tls13, false);
                var buffer = new byte[16 * 1024];
                int n;
                while ((n = await ssl.ReadAsync(buffer)) > 0)
                {
                    await ssl.WriteAsync(buffer.AsMemory(0, n));
                }
            }, new PipeConnectionOptions());
            using (Socket client = server.Connect())
            using (var ssl = new SslStream(new NetworkStream(client, ownsSocket: false), false, (_, certificate, _, _) => certificate?.GetCertHashString() == ServerCertificate.Thumbprint))
            {
                ssl.AuthenticateAsClient("localhost");
                byte[] data = SocketTestExtensions.Pattern(8, 1024 * 1024 + 5);
                Assert.True(data.AsSpan().SequenceEqual(RoundTripAsync(ssl, data).GetAwaiter().GetResult()), "the echo differs");
                client.Shutdown(SocketShutdown.Send);
                Assert.Equal(-1, ssl.ReadByte());
            }

            server.AssertClosedAndClean(expectedStarts: 1);
        });
    }

    [Fact]
    public void The_TLS_options_exist_in_every_build_but_netstandard2_0()
    {
        bool present = typeof(PipeConnectionOptions).GetProperty("TlsServer") is not null;
#if EPOLLSHARP_NETSTANDARD2_0
        Assert.False(present);
        Assert.Null(typeof(PipeConnection).GetProperty("Tls"));
#else
        Assert.True(present);
        Assert.NotNull(typeof(PipeConnection).GetProperty("Tls"));
#endif
        Assert.NotNull(typeof(PipeConnection).GetMethod("AsStream"));
    }

    /// <summary>A loop with a listener serving <c>PipeConnectionHandler(application, options)</c>; counts the application's starts and the closes.</summary>
    private sealed class Server : IDisposable
    {
        private readonly EchoServer _inner;
        private int _starts;
        private bool _disposed;

        public Server(EventLoopBackend backend, Func<PipeConnection, Task> application, PipeConnectionOptions options)
        {
            var closes = new ConcurrentQueue<ConnectionCloseReason>();
            CloseReasons = closes;
            Func<PipeConnection, Task> counted = c =>
            {
                Interlocked.Increment(ref _starts);
                c.ConnectionClosed.Register(() => closes.Enqueue(c.Connection.CloseReason));
                return application(c);
            };
            _inner = new EchoServer(backend, new PipeConnectionHandler(counted, options));
        }

        public ConcurrentQueue<ConnectionCloseReason> CloseReasons { get; }

        public IPEndPoint EndPoint => _inner.EndPoint;

        public Socket Connect(int receiveTimeoutMs = 30_000) => _inner.Connect(receiveTimeoutMs);

        /// <summary>Every connection closed, the application started <paramref name="expectedStarts"/> times, nothing reached the loop.</summary>
        public void AssertClosedAndClean(int expectedStarts, int? maxStarts = null)
        {
            LoopHarness.WaitUntil(() => _inner.Listener.ConnectionCount == 0, "every connection closes", seconds: 15);
            int starts = Volatile.Read(ref _starts);
            Assert.InRange(starts, expectedStarts, maxStarts ?? expectedStarts);

            // ConnectionClosed fires on the thread pool, just after the listener has counted the connection out.
            LoopHarness.WaitUntil(() => CloseReasons.Count == starts, "every started connection's ConnectionClosed fires");
            _inner.AssertNoLoopErrors();
        }

        public void Dispose()
        {
            if (!_disposed)
            {
                _disposed = true;
                _inner.Dispose();
            }
        }
    }
}
