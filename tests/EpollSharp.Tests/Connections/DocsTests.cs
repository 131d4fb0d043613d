using System;
using System.IO;
using System.Text.RegularExpressions;

namespace EpollSharp.Tests.Connections;

/// <summary>Every code block of docs/connections.md marked with its source file appears in that file word for word.</summary>
public partial class DocsTests
{
    [Fact]
    public void Code_in_the_connections_guide_comes_from_files_that_compile()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "EpollSharp.sln")))
        {
            root = Path.GetDirectoryName(root.TrimEnd(Path.DirectorySeparatorChar)) ?? throw new InvalidOperationException("repository root not found");
        }

        string guide = File.ReadAllText(Path.Combine(root, "docs", "connections.md"));
        MatchCollection blocks = SourcedBlock().Matches(guide);
        Assert.True(blocks.Count >= 8, $"only {blocks.Count} sourced code blocks found");
        foreach (Match block in blocks)
        {
            string path = block.Groups["path"].Value;
            string source = File.ReadAllText(Path.Combine(root, path)).Replace("\r\n", "\n", StringComparison.Ordinal);
            string code = block.Groups["code"].Value.Replace("\r\n", "\n", StringComparison.Ordinal);
            Assert.True(source.Contains(code, StringComparison.Ordinal), $"docs/connections.md shows code that is not in {path}:\n{code}");
        }
    }

    [GeneratedRegex(@"<!-- from: (?<path>[^ ]+) -->\r?\n```csharp\r?\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex SourcedBlock();
}
