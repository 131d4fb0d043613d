using System.Diagnostics;
using System.IO;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace EpollSharp.Tests.Connections;

/// <summary>
/// Runs a built sample (samples/NAME/bin/CONFIG/net10.0/NAME.dll) as a child process, optionally under a descriptor limit,
/// and reads its output lines. Outside CI the sample is built first (once per test process, under a file lock shared by
/// concurrent test processes); in CI the solution build has built it.
/// </summary>
public sealed partial class SampleProcess : IDisposable
{
    private static readonly ConcurrentDictionary<string, string> s_built = new();
    private readonly BlockingCollection<string> _stdout = new();
    private readonly ConcurrentQueue<string> _allStdout = new();
    private readonly ConcurrentQueue<string> _stderr = new();

    private SampleProcess(Process process)
    {
        Process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                _allStdout.Enqueue(e.Data);
                _stdout.Add(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                _stderr.Enqueue(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public IPEndPoint EndPoint { get; private set; } = null!;

    public string ListeningLine { get; private set; } = "";

    public IReadOnlyCollection<string> Stderr => _stderr.ToArray();

    public IReadOnlyCollection<string> Stdout => _allStdout.ToArray();

    /// <summary>Starts the sample and waits for its "listening on HOST:PORT ..." line.</summary>
    public static SampleProcess Start(string sample, string arguments, int? descriptorLimit = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        SampleProcess sampleProcess = Launch(sample, arguments, descriptorLimit, environment: environment);
        try
        {
            string line = sampleProcess.WaitForLine(l => l.StartsWith("listening on ", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            sampleProcess.ListeningLine = line;
            Match match = ListeningRegex().Match(line);
            Assert.True(match.Success, "unexpected first line: " + line);
            sampleProcess.EndPoint = new IPEndPoint(IPAddress.Parse(match.Groups["host"].Value), int.Parse(match.Groups["port"].Value, System.Globalization.CultureInfo.InvariantCulture));
            return sampleProcess;
        }
        catch
        {
            sampleProcess.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Starts the sample and returns at once (for a run that is expected to end by itself, e.g. on a bad option).
    /// <paramref name="launcher"/>, when given, is a command that runs the sample in its own process (it must exec it, so
    /// that <see cref="Signal"/> reaches the sample), e.g. <c>systemd-socket-activate -l ADDRESS</c>. <paramref name="environment"/>
    /// adds variables to the sample's environment.
    /// </summary>
    public static SampleProcess Launch(string sample, string arguments, int? descriptorLimit = null, string[]? launcher = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        string dll = Locate(sample);
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var info = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (KeyValuePair<string, string> variable in environment ?? new Dictionary<string, string>())
        {
            info.Environment[variable.Key] = variable.Value;
        }

        if (launcher is not null)
        {
            Assert.Null(descriptorLimit);
            info.FileName = launcher[0];
            foreach (string argument in launcher.Skip(1))
            {
                info.ArgumentList.Add(argument);
            }

            info.ArgumentList.Add(dotnet);
        }
        else if (descriptorLimit is int limit)
        {
            // bash sets the soft and hard limits, so the runtime cannot raise the soft one back.
            info.FileName = "bash";
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add($"ulimit -n {limit} && exec \"$0\" \"$@\"");
            info.ArgumentList.Add(dotnet);
        }
        else
        {
            info.FileName = dotnet;
        }

        info.ArgumentList.Add(dll);
        foreach (string argument in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            info.ArgumentList.Add(argument);
        }

        return new SampleProcess(Process.Start(info)!);
    }

    /// <summary>Waits for the next stdout line that matches; earlier lines are skipped.</summary>
    public string WaitForLine(Func<string, bool> match, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            TimeSpan left = timeout - sw.Elapsed;
            if (left <= TimeSpan.Zero || !_stdout.TryTake(out string? line, left))
            {
                throw new TimeoutException($"No matching output line within {timeout}. stdout: [{string.Join(" | ", _allStdout)}] stderr: [{string.Join(" | ", _stderr)}] exited: {Process.HasExited}");
            }

            if (match(line))
            {
                return line;
            }
        }
    }

    public void Signal(int signal)
    {
        Assert.Equal(0, kill(Process.Id, signal));
    }

    /// <summary>
    /// True when this process ignores <paramref name="signal"/> (the SigIgn mask of /proc/self/status). A child
    /// inherits an ignored disposition across exec and .NET keeps it ignored, so a test that stops a sample with
    /// that signal cannot run (a shell without job control starts background commands with SIGINT ignored).
    /// </summary>
    public static bool IgnoredByThisProcess(int signal)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("SigIgn:", StringComparison.Ordinal))
            {
                ulong mask = Convert.ToUInt64(line.Substring("SigIgn:".Length).Trim(), 16);
                return (mask & (1UL << (signal - 1))) != 0;
            }
        }

        return false;
    }

    /// <summary>CPU time (user + system) the process has used, from /proc/PID/stat (clock ticks of 10 ms).</summary>
    public TimeSpan CpuTime()
    {
        string stat = File.ReadAllText($"/proc/{Process.Id}/stat");
        string[] fields = stat.Substring(stat.LastIndexOf(')') + 2).Split(' ');

        // After the command name: state is field 3, utime field 14 and stime field 15 of proc(5).
        long ticks = long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture);
        return TimeSpan.FromMilliseconds(ticks * 1000.0 / sysconf(SysconfClockTicks));
    }

    public int OpenDescriptors() => Fds.CountOpen(Process.Id);

    public void Dispose()
    {
        try
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
        }

        Process.Dispose();
    }

    /// <summary>Finds (and outside CI, builds) the sample's dll in the configuration the tests were built in.</summary>
    public static string Locate(string sample)
    {
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        return s_built.GetOrAdd(sample, name => Build(name, configuration));
    }

    private static string Build(string sample, string configuration)
    {
        string root = ProcessTools.RepoRoot();
        string project = Path.Combine(root, "samples", sample, sample + ".csproj");
        string dll = Path.Combine(root, "samples", sample, "bin", configuration, "net10.0", sample + ".dll");
        bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
        if (ci && File.Exists(dll))
        {
            return dll;
        }

        // One build at a time across test processes (net8.0 and net10.0 test hosts may run together).
        Directory.CreateDirectory(Path.Combine(root, "artifacts"));
        using var gate = AcquireLock(Path.Combine(root, "artifacts", "sample-build.lock"));
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { "build", project, "-c", configuration, "-nologo", "-v", "q" })
        {
            info.ArgumentList.Add(argument);
        }

        using Process build = Process.Start(info)!;
        string output = build.StandardOutput.ReadToEnd() + build.StandardError.ReadToEnd();
        Assert.True(build.WaitForExit(300_000), "building the sample took more than 5 minutes");
        Assert.True(build.ExitCode == 0, "building the sample failed: " + output);
        Assert.True(File.Exists(dll), "the sample build did not produce " + dll);
        return dll;
    }

    private static FileStream AcquireLock(string path)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (sw.Elapsed < TimeSpan.FromMinutes(5))
            {
                Thread.Sleep(200);
            }
        }
    }

    private const int SysconfClockTicks = 2;

    [GeneratedRegex(@"^listening on (?<host>[0-9.]+):(?<port>\d+) backend=[\w-]+( loops=\d+)?( api=\w+)?( continuations=\w+)?( tls=on)?$")]
    private static partial Regex ListeningRegex();

    [LibraryImport("libc.so.6", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    [LibraryImport("libc.so.6")]
    private static partial long sysconf(int name);
}
