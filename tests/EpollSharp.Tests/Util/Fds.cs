using System.Globalization;
using System.IO;

namespace EpollSharp.Tests.Util;

/// <summary>
/// The one place the tests read the kernel's view of descriptors (/proc/self/fd, /proc/self/fdinfo): whether a number is
/// open, its flags, and how many the process has. The count of this process's descriptors is the library's own
/// <see cref="DescriptorLimits.CountOpen"/> (the test project sees the library's internals), not a copy of it.
/// </summary>
internal static class Fds
{
    /// <summary>O_CLOEXEC as /proc/self/fdinfo prints it (octal 02000000).</summary>
    public const int OCloExec = 0x80000;

    /// <summary>O_NONBLOCK (octal 04000).</summary>
    public const int ONonBlock = 0x800;

    /// <summary>
    /// Whether /proc/self/fd lists <paramref name="fd"/>. Uses readlink (through <see cref="FileSystemInfo.LinkTarget"/>),
    /// which opens nothing: listing the directory would open a descriptor and take the lowest free number,
    /// which is the one just closed.
    /// </summary>
    public static bool IsOpen(int fd)
    {
        try
        {
            return LinkTarget(fd) is not null;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>What /proc/self/fd/N points at, such as <c>anon_inode:[eventpoll]</c>.</summary>
    public static string? LinkTarget(int fd) =>
        new FileInfo("/proc/self/fd/" + fd.ToString(CultureInfo.InvariantCulture)).LinkTarget;

    /// <summary>The "flags:" field of /proc/self/fdinfo/N (printed in octal by the kernel).</summary>
    public static int Flags(int fd) => Convert.ToInt32(FdInfo(fd)["flags"], 8);

    /// <summary>The fields of /proc/self/fdinfo/N, by name (the first of each name).</summary>
    public static Dictionary<string, string> FdInfo(int fd)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadAllLines("/proc/self/fdinfo/" + fd.ToString(CultureInfo.InvariantCulture)))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && !result.ContainsKey(line[..colon]))
            {
                result[line[..colon]] = line[(colon + 1)..].Trim();
            }
        }

        return result;
    }

    /// <summary>A descriptor number that is certainly not open: above any RLIMIT_NOFILE this process can have.</summary>
    public const int NeverOpen = int.MaxValue - 1;

    /// <summary>
    /// How many descriptors this process has open: the entries of /proc/self/fd, less the one the listing itself opens,
    /// as <see cref="DescriptorLimits.CountOpen"/> counts them. Throws where /proc/self/fd cannot be read.
    /// </summary>
    public static int CountOpen() =>
        DescriptorLimits.CountOpen() ?? throw new InvalidOperationException("/proc/self/fd cannot be read here: descriptors cannot be counted");

    /// <summary>How many descriptors the process <paramref name="processId"/> has open: the entries of /proc/PID/fd (listing another process's opens none in it).</summary>
    public static int CountOpen(int processId) =>
        Directory.GetFileSystemEntries("/proc/" + processId.ToString(CultureInfo.InvariantCulture) + "/fd").Length;

    /// <summary>Every descriptor of this process as "N->target" (what /proc/self/fd/N points at, "?" when it closed meanwhile).</summary>
    public static string[] Describe() =>
        Directory.GetFileSystemEntries("/proc/self/fd").Select(f =>
        {
            try
            {
                return Path.GetFileName(f) + "->" + new FileInfo(f).LinkTarget;
            }
            catch (IOException)
            {
                return Path.GetFileName(f) + "->?";
            }
        }).ToArray();
}
