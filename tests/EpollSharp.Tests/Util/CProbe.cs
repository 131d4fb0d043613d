using System.Globalization;
using System.IO;

namespace EpollSharp.Tests.Util;

using static ProcessTools;

/// <summary>
/// What a C probe under <c>native/probe/</c> printed: one "NAME VALUE" line per fact. <see cref="Build"/> compiles the probe
/// with the C compiler on PATH, runs it and reads its lines; a missing compiler is a <see cref="SkipReason"/>, anything else
/// that goes wrong an <see cref="Error"/>.
/// </summary>
public sealed class CProbe
{
    public Dictionary<string, string> Values { get; } = new(StringComparer.Ordinal);

    public string? SkipReason { get; init; }

    public string? Error { get; init; }

    public int Get(string name) =>
        Values.TryGetValue(name, out string? v)
            ? int.Parse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)
            : throw new KeyNotFoundException($"the probe does not print {name}");

    public uint GetUnsigned(string name) => uint.Parse(Values[name], NumberStyles.None, CultureInfo.InvariantCulture);

    /// <summary>Compiles <c>native/probe/<paramref name="sourceName"/></c> with <paramref name="compilerFlags"/>, runs it and reads what it prints.</summary>
    public static CProbe Build(string sourceName, IEnumerable<string> compilerFlags)
    {
        string? cc = FindOnPath("cc") ?? FindOnPath("gcc") ?? FindOnPath("clang");
        if (cc is null)
        {
            return new CProbe { SkipReason = $"no C compiler (cc, gcc or clang) on PATH: native/probe/{sourceName} was not compiled" };
        }

        string source = Path.Combine(RepoRoot(), "native", "probe", sourceName);
        if (!File.Exists(source))
        {
            return new CProbe { Error = "missing " + source };
        }

        string dir = Path.Combine(Path.GetTempPath(), "epollsharp-probe-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string exe = Path.Combine(dir, Path.GetFileNameWithoutExtension(sourceName));
            string[] args = compilerFlags.Concat(new[] { "-o", exe, source }).ToArray();
            var (code, output) = Run(cc, args);
            if (code != 0)
            {
                return new CProbe { Error = $"{cc} {string.Join(" ", args)} failed ({code}):\n{output}" };
            }

            (code, output) = Run(exe);
            if (code != 0)
            {
                return new CProbe { Error = $"the probe failed ({code}):\n{output}" };
            }

            var result = new CProbe();
            foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                string[] parts = line.Trim().Split(' ');
                if (parts.Length != 2 || result.Values.ContainsKey(parts[0]))
                {
                    return new CProbe { Error = "bad or repeated probe line: " + line };
                }

                result.Values[parts[0]] = parts[1];
            }

            return result;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
