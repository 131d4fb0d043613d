using System.IO;
using System.Text.RegularExpressions;

namespace EpollSharp.Tests.Connections;

/// <summary>Every code block of the README and docs/ marked with its source file appears in that file word for word.</summary>
public partial class DocsTests
{
    [Fact]
    public void Code_in_the_connections_guide_comes_from_files_that_compile()
    {
        string root = ProcessTools.RepoRoot();

        string guide = File.ReadAllText(Path.Combine(root, "docs", "connections.md"));
        MatchCollection blocks = SourcedBlock().Matches(guide);
        Assert.True(blocks.Count >= 8, $"only {blocks.Count} sourced code blocks found");
        AssertSourced(root, "docs/connections.md");
    }

    [Fact]
    public void Code_in_the_readme_comes_from_a_file_that_compiles()
    {
        string root = ProcessTools.RepoRoot();

        Assert.True(AssertSourced(root, "README.md") >= 1, "the README's example is not marked with its source file");
    }

    private static int AssertSourced(string root, string markdown)
    {
        string text = File.ReadAllText(Path.Combine(root, markdown));
        MatchCollection blocks = SourcedBlock().Matches(text);
        foreach (Match block in blocks)
        {
            string path = block.Groups["path"].Value;
            string source = File.ReadAllText(Path.Combine(root, path)).Replace("\r\n", "\n", StringComparison.Ordinal);
            string code = block.Groups["code"].Value.Replace("\r\n", "\n", StringComparison.Ordinal);
            Assert.True(source.Contains(code, StringComparison.Ordinal), $"{markdown} shows code that is not in {path}:\n{code}");
        }

        return blocks.Count;
    }

    [GeneratedRegex(@"<!-- from: (?<path>[^ ]+) -->\r?\n```csharp\r?\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex SourcedBlock();
}
