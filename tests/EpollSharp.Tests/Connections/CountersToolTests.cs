using System.Globalization;
using System.IO;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// The EpollSharp meter as an operator sees it: <c>dotnet-counters</c> (a local tool of the repository, restored here)
/// attached to the running echo sample over EventPipe, while a client talks to it.
/// </summary>
[Collection(TimingSensitive.Name)]
public class CountersToolTests
{
    private readonly ITestOutputHelper _output;

    public CountersToolTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Dotnet_counters_reads_the_EpollSharp_meter_of_the_running_echo_sample()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the sample test runs a Linux process");
        string root = ProcessTools.RepoRoot();
        string output = Path.Combine(Path.GetTempPath(), "es-counters-" + Guid.NewGuid().ToString("N") + ".csv");

        // One restore at a time across test processes; a no-op when the tool is there.
        Directory.CreateDirectory(Path.Combine(root, "artifacts"));
        using (FileStream gate = OpenExclusive(Path.Combine(root, "artifacts", "tool-restore.lock"), TimeSpan.FromMinutes(5)))
        {
            (int code, string restore) = ProcessTools.RunIn(root, TimeSpan.FromMinutes(5), "dotnet", "tool", "restore");
            Assert.True(code == 0, "dotnet tool restore failed: " + restore);
        }

        using SampleProcess server = SampleProcess.Start("EchoServer", "--port 0");
        using var stop = new CancellationTokenSource();
        long echoed = 0;
        Exception? clientError = null;
        var client = new Thread(() =>
        {
            try
            {
                using Socket socket = EchoServer.ConnectTo(server.EndPoint);
                byte[] message = SocketTestExtensions.Pattern(4, 64);
                while (!stop.IsCancellationRequested)
                {
                    socket.Send(message);
                    if (!message.AsSpan().SequenceEqual(socket.ReceiveExactly(message.Length)))
                    {
                        throw new InvalidOperationException("the echo differs from the message");
                    }

                    Interlocked.Add(ref echoed, message.Length);
                    Thread.Sleep(1);
                }
            }
            catch (Exception e)
            {
                clientError = e;
            }
        });
        client.Start();
        try
        {
            (int code, string collect) = ProcessTools.RunIn(root, TimeSpan.FromMinutes(2), "dotnet", "dotnet-counters", "collect", "--process-id", server.Process.Id.ToString(CultureInfo.InvariantCulture),
                "--counters", "EpollSharp", "--format", "csv", "--output", output, "--duration", "00:00:00:04");
            _output.WriteLine(collect);
            Assert.True(code == 0, "dotnet-counters collect failed: " + collect);
        }
        finally
        {
            stop.Cancel();
            client.Join(20_000);
        }

        try
        {
            string[] lines = File.ReadAllLines(output);
            foreach (string line in lines.Take(30))
            {
                _output.WriteLine(line);
            }

            // Timestamp,Provider,Counter Name,Counter Type,Mean/Increment
            var rows = lines.Skip(1).Select(l => l.Split(',')).Where(f => f.Length >= 5 && f[1] == "EpollSharp").ToArray();
            double Last(string counter) => rows.Where(f => f[2].StartsWith(counter + " ", StringComparison.Ordinal)).Select(f => double.Parse(f[4], CultureInfo.InvariantCulture)).LastOrDefault(-1);
            Assert.True(rows.Length > 0, "no EpollSharp rows in the export");
            Assert.Equal(1, Last("epollsharp.active_connections"));
            Assert.True(Last("epollsharp.loop.iterations") > 0, "the loop iterated (a rate per second)");
            Assert.True(Last("epollsharp.connection.bytes_received") > 0, "bytes arrived (a rate per second)");
            Assert.Contains(rows, f => f[2].Contains("[epollsharp.loop.backend=epoll;epollsharp.loop.id=", StringComparison.Ordinal));
            Assert.Contains(rows, f => f[2].StartsWith("epollsharp.loop.callback.duration (s)", StringComparison.Ordinal) && f[2].Contains("Percentile=99", StringComparison.Ordinal));
            Assert.Null(clientError);
            Assert.True(Interlocked.Read(ref echoed) > 0);
        }
        finally
        {
            File.Delete(output);
        }
    }

    /// <summary>
    /// Opens <paramref name="path"/> with no sharing, waiting while another test process (the net8.0 and net10.0 test
    /// runs go side by side) holds it: opening a file held with <see cref="FileShare.None"/> fails at once.
    /// </summary>
    private static FileStream OpenExclusive(string path, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException) when (clock.Elapsed < timeout)
            {
                Thread.Sleep(200);
            }
        }
    }
}
