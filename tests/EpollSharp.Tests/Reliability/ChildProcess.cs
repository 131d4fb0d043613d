using System.Diagnostics;
using System.IO;

namespace EpollSharp.Tests.Reliability;

/// <summary>
/// Runs a scenario of <see cref="ChildScenarios"/> in a child process: <c>bash -c 'ulimit -n N &amp;&amp; exec dotnet EpollSharp.Tests.dll'</c>
/// with <c>DOTNET_STARTUP_HOOKS</c> naming this assembly (see <see cref="StartupHook"/>). bash sets the soft and hard limits,
/// so the runtime cannot raise the soft one back. The child prints <c>ok:</c>, <c>info:</c> and <c>fail:</c> lines and exits 0
/// when every check held.
/// </summary>
public static class ChildProcess
{
    public const string ScenarioVariable = "EPOLLSHARP_RELIABILITY_CHILD";

    public static ChildResult Run(string scenario, int descriptorLimit, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        string dll = typeof(ChildProcess).Assembly.Location;
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var info = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"ulimit -n {descriptorLimit} && exec \"$0\" \"$@\"");
        info.ArgumentList.Add(dotnet);
        info.ArgumentList.Add(dll);
        info.Environment["DOTNET_STARTUP_HOOKS"] = dll;

        // The runtime cannot start a thread without a free descriptor, and ends the process ("Out of memory.") when one of
        // its own fails to start. With tiered compilation its background compiler thread may need starting at any moment
        // (code becomes hot while the scenario has no descriptor free), so the child compiles everything fully at once.
        info.Environment["DOTNET_TieredCompilation"] = "0";
        info.Environment[ScenarioVariable] = scenario;
        foreach (KeyValuePair<string, string> variable in environment ?? new Dictionary<string, string>())
        {
            info.Environment[variable.Key] = variable.Value;
        }

        var stdout = new ConcurrentQueue<string>();
        var stderr = new ConcurrentQueue<string>();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                stdout.Enqueue(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                stderr.Enqueue(e.Data);
            }
        };
        var sw = Stopwatch.StartNew();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool exited = process.WaitForExit((int)timeout.TotalMilliseconds);
        if (!exited)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(10_000);
        }

        // The parameterless wait also waits for the end of the redirected streams.
        process.WaitForExit();
        return new ChildResult(exited ? process.ExitCode : -1, exited, stdout.ToArray(), stderr.ToArray(), sw.Elapsed);
    }
}

public sealed record ChildResult(int ExitCode, bool Exited, IReadOnlyList<string> Stdout, IReadOnlyList<string> Stderr, TimeSpan Elapsed)
{
    public IEnumerable<string> Failures => Stdout.Where(l => l.StartsWith("fail:", StringComparison.Ordinal));

    public string Describe() =>
        $"exit {ExitCode} (exited: {Exited}) after {Elapsed.TotalSeconds:F1} s\nstdout:\n  {string.Join("\n  ", Stdout)}\nstderr:\n  {string.Join("\n  ", Stderr)}";
}
