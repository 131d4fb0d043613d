using System.Runtime.InteropServices;

namespace EpollSharp.Native;

/// <summary>Operating-system checks in one place.</summary>
internal static class Platform
{
    internal static readonly bool IsLinux = RuntimeInformation.IsOSPlatform(OSPlatform.Linux);

    internal static readonly bool IsMacOS = RuntimeInformation.IsOSPlatform(OSPlatform.OSX);

    internal static readonly bool IsFreeBSD = RuntimeInformation.IsOSPlatform(OSPlatform.Create("FREEBSD"));

    internal static readonly bool IsWindows = RuntimeInformation.IsOSPlatform(OSPlatform.Windows);

    internal static void ThrowIfNotLinux(string feature)
    {
        if (!IsLinux)
        {
            throw new System.PlatformNotSupportedException(feature + " is available on Linux only; this process runs on " + RuntimeInformation.OSDescription + ".");
        }
    }
}
