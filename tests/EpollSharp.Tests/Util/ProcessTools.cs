using System.Diagnostics;
using System.IO;

namespace EpollSharp.Tests.Util;

/// <summary>Running tools (a C compiler, a probe) from tests, and finding the repository.</summary>
public static class ProcessTools
{
    /// <summary>Runs <paramref name="file"/> with <paramref name="args"/>; returns its exit code and stdout+stderr (-1 after 120 s).</summary>
    public static (int Code, string Output) Run(string file, params string[] args) => RunIn(null, TimeSpan.FromSeconds(120), file, args);

    /// <summary>As <see cref="Run"/>, in <paramref name="workingDirectory"/> (null: this process's), for at most <paramref name="timeout"/>.</summary>
    public static (int Code, string Output) RunIn(string? workingDirectory, TimeSpan timeout, string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? string.Empty,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit((int)timeout.TotalMilliseconds))
        {
            process.Kill(entireProcessTree: true);
            return (-1, "timed out after " + timeout);
        }

        return (process.ExitCode, stdout + stderr.Result);
    }

    /// <summary>The full path of <paramref name="name"/> on PATH, or null.</summary>
    public static string? FindOnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>The repository root: the first directory above the test binaries that holds EpollSharp.sln.</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "EpollSharp.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("EpollSharp.sln not found above " + AppContext.BaseDirectory);
    }
}
