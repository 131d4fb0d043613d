using System.Reflection;
using System.Runtime.Versioning;
using EpollSharp.Native;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Native;

/// <summary>The tests run against the build of EpollSharp that was asked for: its own TFM, or netstandard2.0 (DllImport) with -p:EpollSharpTargetFramework=netstandard2.0.</summary>
public class LibraryBuildTests
{
    private readonly ITestOutputHelper _output;

    public LibraryBuildTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void LoadedLibraryIsTheExpectedBuild()
    {
        var assembly = typeof(EpollHandle).Assembly;
        string? framework = assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName;
        string? self = typeof(LibraryBuildTests).Assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName;
        _output.WriteLine($"EpollSharp: {framework} from {assembly.Location}; tests: {self}");
#if EPOLLSHARP_NETSTANDARD2_0
        Assert.Equal(".NETStandard,Version=v2.0", framework);
        // The DllImport build: the declared method is itself the P/Invoke.
        Assert.True(EpollWaitIsPInvoke(), "netstandard2.0 declares epoll_wait with DllImport");
#else
        Assert.Equal(self, framework);
        // The LibraryImport build: the declared method is a generated managed stub around an inner P/Invoke.
        Assert.False(EpollWaitIsPInvoke(), "net8.0+ declares epoll_wait with LibraryImport");
#endif
    }

    private static bool EpollWaitIsPInvoke()
    {
        MethodInfo method = typeof(EpollSharp.Interop.Sys).GetMethod("epoll_wait", BindingFlags.NonPublic | BindingFlags.Static)!;
        return (method.Attributes & MethodAttributes.PinvokeImpl) != 0;
    }
}
