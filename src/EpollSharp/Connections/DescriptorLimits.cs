using System;
using System.Globalization;
using System.IO;
using EpollSharp.Native;

namespace EpollSharp.Connections;

/// <summary>Reads the process's descriptor limit and derives the default connection limit from it.</summary>
internal static class DescriptorLimits
{
    /// <summary>Used where the limit cannot be read.</summary>
    internal const int FallbackMaxConnections = 4096;

    /// <summary>The soft <c>RLIMIT_NOFILE</c>, or null when it cannot be read (not Linux, or no /proc).</summary>
    internal static long? ReadSoftLimit()
    {
        if (!Platform.IsLinux)
        {
            return null;
        }

        try
        {
            foreach (string line in File.ReadLines("/proc/self/limits"))
            {
                long? value = ParseMaxOpenFiles(line);
                if (value.HasValue)
                {
                    return value;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }

    /// <summary>Parses the soft limit from a <c>/proc/self/limits</c> line such as <c>Max open files  1024  4096  files</c>; null for other lines.</summary>
    internal static long? ParseMaxOpenFiles(string line)
    {
        const string Prefix = "Max open files";
        if (!line.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        string[] fields = line.Substring(Prefix.Length).Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length == 0)
        {
            return null;
        }

        if (string.Equals(fields[0], "unlimited", StringComparison.Ordinal))
        {
            return int.MaxValue;
        }

        return long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out long soft) ? soft : null;
    }

    /// <summary>How many descriptors the process has open now, or null when it cannot be counted.</summary>
    internal static int? CountOpen()
    {
        if (!Platform.IsLinux)
        {
            return null;
        }

        try
        {
            int count = 0;
            foreach (string unused in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
            {
                count++;
            }

            // The enumeration's own directory descriptor was counted.
            return Math.Max(0, count - 1);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The headroom kept for the runtime: 1/32 of the limit, at least 64 and at most 512.</summary>
    internal static long Headroom(long softLimit) => Math.Min(512, Math.Max(64, softLimit / 32));

    /// <summary>See <see cref="ListenerOptions.DefaultMaxConnections"/>.</summary>
    internal static int DefaultMaxConnections()
    {
        long? soft = ReadSoftLimit();
        if (!soft.HasValue)
        {
            return FallbackMaxConnections;
        }

        return Derive(soft.Value, CountOpen() ?? 64);
    }

    /// <summary>The connection limit for <paramref name="softLimit"/> with <paramref name="openNow"/> descriptors open: what is left after the <see cref="Headroom"/>, at least 1.</summary>
    internal static int Derive(long softLimit, int openNow)
    {
        long max = softLimit - openNow - Headroom(softLimit);
        return (int)Math.Max(1, Math.Min(int.MaxValue, max));
    }
}
