using System.IO;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// samples/EchoServer's <c>--api callback|pipe|stream</c> and <c>--tls PATH.pfx</c>: each shape echoes byte for
/// byte, drains on SIGTERM and reports the bytes it echoed; TLS with a certificate made here (never a file of the repository).
/// </summary>
[Collection(TimingSensitive.Name)]
public class EchoServerApiTests
{
    private const int SigTerm = 15;
    private const string Password = "s3cret-Pfx";
    private readonly ITestOutputHelper _output;

    public EchoServerApiTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData("callback", "backend=epoll loops=1")]
    [InlineData("pipe", "backend=epoll loops=1 api=pipe")]
    [InlineData("stream", "backend=epoll loops=1 api=stream")]
    public void Each_api_echoes_drains_on_SIGTERM_and_counts_the_bytes(string api, string expectedTail)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --backend epoll --api " + api);
        _output.WriteLine(server.ListeningLine);
        Assert.EndsWith(expectedTail, server.ListeningLine, StringComparison.Ordinal);

        long expectedBytes = 0;
        using (Socket client = EchoServer.ConnectTo(server.EndPoint))
        {
            byte[] data = SocketTestExtensions.Pattern(5, 200_000);
            var sender = new Thread(() => client.Send(data));
            sender.Start();
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sender.Join();
            expectedBytes += data.Length;

            // The peer's FIN: the server answers with its own once everything is echoed.
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
        }

        // Data in flight when SIGTERM arrives: all of it comes back, then end of stream.
        using Socket late = EchoServer.ConnectTo(server.EndPoint);
        byte[] inFlight = SocketTestExtensions.Pattern(6, 40_000);
        late.Send(inFlight);
        Thread.Sleep(200);
        server.Signal(SigTerm);
        Assert.Equal(inFlight, late.ReceiveToEnd());
        expectedBytes += inFlight.Length;
        late.Dispose();

        AssertStats(server, connections: 2, expectedBytes);
    }

    [SkippableTheory]
    [InlineData("--api pipe", "api=pipe tls=on", false)]
    [InlineData("--api stream", "api=stream tls=on", false)]
    [InlineData("", "api=pipe tls=on", true)] // --api left out: pipe; the password from the environment
    [InlineData("--api stream", "api=stream tls=on", false, false)] // a file without a password, and no --tls-password
    public void With_tls_an_SslStream_client_gets_1_MiB_back_byte_for_byte(string api, string expectedTail, bool passwordFromEnvironment, bool withPassword = true)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using var pfx = new TemporaryPfx(withPassword ? Password : null);
        string arguments = $"--port 0 --backend epoll {api} --tls {pfx.Path}" + (passwordFromEnvironment || !withPassword ? "" : " --tls-password " + Password);
        var environment = passwordFromEnvironment ? new Dictionary<string, string> { ["EchoServer__Tls__Password"] = Password } : null;
        using SampleProcess server = SampleProcess.Start("EchoServer", arguments, environment: environment);
        _output.WriteLine(server.ListeningLine);
        Assert.EndsWith("backend=epoll loops=1 " + expectedTail, server.ListeningLine, StringComparison.Ordinal);

        byte[] data = SocketTestExtensions.Pattern(7, 1024 * 1024);
        EchoOverTls(server.EndPoint, pfx.Thumbprint, data, _output, finishWithFin: true);

        server.Signal(SigTerm);
        AssertStats(server, connections: 1, data.Length);
    }

    /// <summary>The pipe handler is sealed (no OnAcceptPaused of the sample's): the library's AcceptPaused warning reaches stderr under the sample's logging settings.</summary>
    [SkippableTheory]
    [InlineData("pipe")]
    [InlineData("stream")]
    public void An_accept_pause_in_pipe_mode_is_logged_on_stderr(string api)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test signals a Linux process");
        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0 --backend epoll --max-connections 1 --api " + api);
        using Socket first = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 5_000);
        first.Send(new byte[] { 1 });
        Assert.Equal(1, first.ReceiveExactly(1)[0]);
        using Socket second = EchoServer.ConnectTo(server.EndPoint, receiveTimeoutMs: 5_000);
        second.Send(new byte[] { 2 });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!server.Stderr.Any(l => l.Contains("paused", StringComparison.Ordinal)) && sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(50);
        }

        _output.WriteLine(string.Join("\n", server.Stderr));
        Assert.Contains(server.Stderr, l => l.Contains("warn: EpollSharp.Connections", StringComparison.Ordinal));
        Assert.Contains(server.Stderr, l => l.Contains("Accepting on 127.0.0.1:", StringComparison.Ordinal) && l.Contains("paused", StringComparison.Ordinal));
        first.Dispose();
        second.Dispose();
        server.Signal(SigTerm);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        server.Process.WaitForExit();
        Assert.Equal(0, server.Process.ExitCode);
    }

    [SkippableTheory]
    [InlineData("--tls-password wrong-password", "cannot be loaded as PKCS#12")]
    [InlineData("", "cannot be loaded as PKCS#12")] // no password at all
    public void A_wrong_tls_password_ends_the_program_with_a_clear_message(string passwordArguments, string expected)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using var pfx = new TemporaryPfx(Password);
        string stderr = AssertRefused($"--port 0 --tls {pfx.Path} {passwordArguments}");
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.Contains("--tls (EchoServer:Tls:Path)", stderr, StringComparison.Ordinal);
        Assert.Contains("--tls-password", stderr, StringComparison.Ordinal);
        Assert.Contains(pfx.Path, stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_missing_tls_file_ends_the_program_with_a_clear_message()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        string path = Path.Combine(Path.GetTempPath(), "echoserver-missing-" + Guid.NewGuid().ToString("N") + ".pfx");
        string stderr = AssertRefused($"--port 0 --tls {path} --tls-password {Password}");
        Assert.Contains($"--tls (EchoServer:Tls:Path): '{path}' does not exist", stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Tls_with_the_callback_api_is_refused_naming_both_flags()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using var pfx = new TemporaryPfx(Password);
        string stderr = AssertRefused($"--port 0 --api callback --tls {pfx.Path} --tls-password {Password}");
        Assert.Contains("--api callback (EchoServer:Api) cannot serve --tls (EchoServer:Tls:Path)", stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_bad_api_is_refused_naming_it()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        string stderr = AssertRefused("--port 0 --api sockets");
        Assert.Contains("--api (EchoServer:Api): 'sockets' is not one of callback, pipe, stream.", stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Help_lists_api_and_tls_with_their_keys_and_variables()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        using SampleProcess help = SampleProcess.Launch("EchoServer", "--help");
        Assert.True(help.Process.WaitForExit(30_000), "the sample did not exit");
        help.Process.WaitForExit();
        Assert.Equal(0, help.Process.ExitCode);
        foreach ((string flag, string key, string variable) in new[]
        {
            ("--api", "EchoServer:Api", "EchoServer__Api"),
            ("--tls", "EchoServer:Tls:Path", "EchoServer__Tls__Path"),
            ("--tls-password", "EchoServer:Tls:Password", "EchoServer__Tls__Password"),
        })
        {
            Assert.Contains(help.Stdout, l => l.TrimStart().StartsWith(flag + " ", StringComparison.Ordinal) && l.Contains(key + " ", StringComparison.Ordinal) && l.Contains(variable + " ", StringComparison.Ordinal));
        }

        Assert.Contains(help.Stdout, l => l.Contains("[--api callback|pipe|stream] [--tls PATH.pfx [--tls-password PASSWORD]]", StringComparison.Ordinal));
        Assert.Contains(help.Stdout, l => l.Contains("AcceptPaused", StringComparison.Ordinal));
    }

    private string AssertRefused(string arguments)
    {
        using SampleProcess server = SampleProcess.Launch("EchoServer", arguments);
        Assert.True(server.Process.WaitForExit(30_000), "the sample did not exit");
        server.Process.WaitForExit(); // and its output is read to the end
        string stderr = string.Join("\n", server.Stderr);
        _output.WriteLine(stderr);
        Assert.Equal(2, server.Process.ExitCode);
        Assert.DoesNotContain(server.Stdout, l => l.StartsWith("listening on", StringComparison.Ordinal));
        return stderr;
    }

    private void AssertStats(SampleProcess server, int connections, long bytes)
    {
        string stats = server.WaitForLine(l => l.StartsWith("stats:", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
        _output.WriteLine(stats);
        Match match = Regex.Match(stats, @"^stats: connections=(\d+) bytes=(\d+) allocated=(\d+)$");
        Assert.True(match.Success, stats);
        Assert.Equal(connections.ToString(System.Globalization.CultureInfo.InvariantCulture), match.Groups[1].Value);
        Assert.Equal(bytes.ToString(System.Globalization.CultureInfo.InvariantCulture), match.Groups[2].Value);
        Assert.True(long.Parse(match.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.True(server.Process.WaitForExit(20_000), "the sample did not exit");
        server.Process.WaitForExit();
        Assert.Equal(0, server.Process.ExitCode);
        Assert.Empty(server.Stderr);
    }

    /// <summary>
    /// Sends <paramref name="data"/> in 50,000-byte pieces (as a load generator does) through an <see cref="SslStream"/>
    /// client that trusts only the certificate with <paramref name="thumbprint"/>, reads it all back byte for byte, then
    /// ends the session with close_notify (and a FIN when <paramref name="finishWithFin"/>) and expects the server's end of stream.
    /// </summary>
    internal static void EchoOverTls(EndPoint endPoint, string thumbprint, byte[] data, ITestOutputHelper output, bool finishWithFin)
    {
        using Socket client = EchoServer.ConnectTo(endPoint, receiveTimeoutMs: 30_000);
        using var ssl = new SslStream(new NetworkStream(client, ownsSocket: false), false, (_, certificate, _, _) => certificate?.GetCertHashString() == thumbprint);
        ssl.AuthenticateAsClient(new SslClientAuthenticationOptions { TargetHost = "localhost", EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13 });
        output.WriteLine($"{ssl.SslProtocol} {ssl.NegotiatedCipherSuite}");
        Task sending = Task.Run(() =>
        {
            for (int offset = 0; offset < data.Length; offset += 50_000)
            {
                ssl.Write(data, offset, Math.Min(50_000, data.Length - offset));
            }
        });
        var received = new byte[data.Length];
        int total = 0;
        while (total < received.Length)
        {
            int n = ssl.Read(received, total, received.Length - total);
            Assert.True(n > 0, $"end of stream after {total} bytes");
            total += n;
        }

        Assert.True(sending.Wait(TimeSpan.FromSeconds(30)), "the client's send did not finish");
        Assert.Equal(data, received);

        // close_notify (and FIN): the server ends the connection in order, its own close_notify, then end of stream.
        ssl.ShutdownAsync().GetAwaiter().GetResult();
        if (finishWithFin)
        {
            client.Shutdown(SocketShutdown.Send);
        }

        Assert.Equal(0, ssl.Read(new byte[1], 0, 1));
    }

    /// <summary>A self-signed ECDSA certificate for localhost and 127.0.0.1 with its key, exported to a temporary password-protected .pfx, deleted on dispose.</summary>
    internal sealed class TemporaryPfx : IDisposable
    {
        public TemporaryPfx(string? password)
        {
            using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, false));
            var names = new SubjectAlternativeNameBuilder();
            names.AddDnsName("localhost");
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
            using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
            Thumbprint = certificate.Thumbprint;
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "echoserver-" + Guid.NewGuid().ToString("N") + ".pfx");
            File.WriteAllBytes(Path, certificate.Export(X509ContentType.Pfx, password));
        }

        public string Path { get; }

        public string Thumbprint { get; }

        public void Dispose() => File.Delete(Path);
    }
}
