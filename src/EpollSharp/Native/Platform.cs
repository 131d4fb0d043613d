using System.Runtime.InteropServices;

namespace EpollSharp.Native;

/// <summary>Operating-system checks in one place: code elsewhere asks these, never <c>RuntimeInformation</c> or <c>OperatingSystem</c>.</summary>
internal static class Platform
{
    /// <summary>Whether this process runs on Linux.</summary>
    internal static readonly bool IsLinux = RuntimeInformation.IsOSPlatform(OSPlatform.Linux);

    /// <summary>Whether this process runs on macOS.</summary>
    internal static readonly bool IsMacOS = RuntimeInformation.IsOSPlatform(OSPlatform.OSX);

    /// <summary>Whether this process runs on FreeBSD.</summary>
    internal static readonly bool IsFreeBSD = RuntimeInformation.IsOSPlatform(OSPlatform.Create("FREEBSD"));

    /// <summary>Whether this process runs on Windows.</summary>
    internal static readonly bool IsWindows = RuntimeInformation.IsOSPlatform(OSPlatform.Windows);

    /// <summary>Throws <see cref="System.PlatformNotSupportedException"/> naming <paramref name="feature"/> when this process does not run on Linux.</summary>
    internal static void ThrowIfNotLinux(string feature)
    {
        if (!IsLinux)
        {
            throw new System.PlatformNotSupportedException(feature + " is available on Linux only; this process runs on " + RuntimeInformation.OSDescription + ".");
        }
    }
}
