using EpollSharp.Backends;
using EpollSharp.Native;
using OS = EpollSharp.Backends.KqueueLibrary.HostOS;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// How the kqueue library is found and when the backend is unavailable: the decision for every platform (a pure
/// function, so it is tested everywhere), and what this process decided.
/// </summary>
public class KqueueLibraryTests
{
    private const string Env = KqueueLibrary.EnvironmentVariable;

    [Fact]
    public void macOS_uses_libSystem_then_libc_with_the_Darwin_layout()
    {
        var plan = KqueueLibrary.MakePlan(null, OS.MacOS, is64BitProcess: true, canLoadByPath: true);
        Assert.Null(plan.UnavailableReason);
        Assert.Equal(KqueueFlavor.Darwin, plan.Flavor);
        Assert.Equal(new[] { "/usr/lib/libSystem.B.dylib", "libc" }, plan.Candidates);
    }

    [Fact]
    public void FreeBSD_uses_libc_so_7_with_the_FreeBSD_layout()
    {
        var plan = KqueueLibrary.MakePlan("  ", OS.FreeBsd, is64BitProcess: true, canLoadByPath: true);
        Assert.Null(plan.UnavailableReason);
        Assert.Equal(KqueueFlavor.FreeBsd, plan.Flavor);
        Assert.Equal(new[] { "libc.so.7" }, plan.Candidates);
    }

    [Fact]
    public void Linux_without_the_variable_is_unavailable_and_says_how_to_enable_it()
    {
        var plan = KqueueLibrary.MakePlan(null, OS.Linux, is64BitProcess: true, canLoadByPath: true);
        Assert.NotNull(plan.UnavailableReason);
        Assert.Contains(Env, plan.UnavailableReason, StringComparison.Ordinal);
        Assert.Contains("libkqueue", plan.UnavailableReason, StringComparison.Ordinal);
        Assert.Empty(plan.Candidates);
    }

    [Fact]
    public void Linux_with_the_variable_loads_that_file_with_the_libkqueue_layout()
    {
        var plan = KqueueLibrary.MakePlan(" /opt/kq/libkqueue.so ", OS.Linux, is64BitProcess: true, canLoadByPath: true);
        Assert.Null(plan.UnavailableReason);
        Assert.Equal(KqueueFlavor.LibKqueue, plan.Flavor);
        Assert.Equal(new[] { "/opt/kq/libkqueue.so" }, plan.Candidates);
        Assert.Contains(Env, plan.Source, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData((int)OS.MacOS, (int)KqueueFlavor.Darwin)]
    [InlineData((int)OS.FreeBsd, (int)KqueueFlavor.FreeBsd)]
    public void On_macOS_and_FreeBSD_the_variable_changes_the_file_not_the_layout(int os, int flavor)
    {
        var plan = KqueueLibrary.MakePlan("/somewhere/libc.so", (OS)os, is64BitProcess: true, canLoadByPath: true);
        Assert.Equal((KqueueFlavor)flavor, plan.Flavor);
        Assert.Equal(new[] { "/somewhere/libc.so" }, plan.Candidates);
    }

    [Fact]
    public void The_netstandard2_0_build_imports_libc_on_macOS_and_FreeBSD_and_ignores_the_variable()
    {
        var mac = KqueueLibrary.MakePlan("/x/libkqueue.so", OS.MacOS, is64BitProcess: true, canLoadByPath: false);
        Assert.Equal(new[] { "libc" }, mac.Candidates);
        Assert.Equal(KqueueFlavor.Darwin, mac.Flavor);
        var bsd = KqueueLibrary.MakePlan(null, OS.FreeBsd, is64BitProcess: true, canLoadByPath: false);
        Assert.Equal(new[] { "libc" }, bsd.Candidates);
        Assert.Equal(KqueueFlavor.FreeBsd, bsd.Flavor);
    }

    [Fact]
    public void The_netstandard2_0_build_on_Linux_is_unavailable_with_or_without_the_variable()
    {
        var with = KqueueLibrary.MakePlan("/x/libkqueue.so", OS.Linux, is64BitProcess: true, canLoadByPath: false);
        Assert.Contains("netstandard2.0", with.UnavailableReason, StringComparison.Ordinal);
        var without = KqueueLibrary.MakePlan(null, OS.Linux, is64BitProcess: true, canLoadByPath: false);
        Assert.Contains("netstandard2.0", without.UnavailableReason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_32_bit_process_or_another_OS_is_unavailable()
    {
        Assert.Contains("64-bit", KqueueLibrary.MakePlan(null, OS.MacOS, is64BitProcess: false, canLoadByPath: true).UnavailableReason, StringComparison.Ordinal);
        Assert.Contains("Linux only", KqueueLibrary.MakePlan("/x/kqueue.dll", OS.Other, is64BitProcess: true, canLoadByPath: true).UnavailableReason, StringComparison.Ordinal);
        Assert.NotNull(KqueueLibrary.MakePlan(null, OS.Other, is64BitProcess: true, canLoadByPath: true).UnavailableReason);
    }

    [SkippableFact]
    public void Unavailable_here_means_IsAvailable_false_with_the_reason_and_Create_throws_it()
    {
        bool available = BackendFactory.IsAvailable(EventLoopBackend.Kqueue, out string reason);
        Skip.If(available, "the kqueue backend is available in this process (" + KqueueLibrary.Source + ")");
        Assert.False(string.IsNullOrWhiteSpace(reason));
        var ex = Assert.Throws<PlatformNotSupportedException>(() => new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Kqueue }));
        Assert.Equal(reason, ex.Message);
        if (Platform.IsLinux && string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(Env)))
        {
#if EPOLLSHARP_NETSTANDARD2_0
            // That build cannot load a library by path at all: the reason says so and names the build to use.
            Assert.Contains("netstandard2.0 build", reason, StringComparison.Ordinal);
#else
            Assert.Contains(Env, reason, StringComparison.Ordinal);
#endif
        }
    }

    [SkippableFact]
    public void With_the_variable_on_Linux_the_backend_is_available_with_the_libkqueue_layout()
    {
        Skip.IfNot(Platform.IsLinux && !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(Env)), Env + " is not set (or this is not Linux)");
        bool available = BackendFactory.IsAvailable(EventLoopBackend.Kqueue, out string reason);
#if EPOLLSHARP_NETSTANDARD2_0
        Assert.False(available);
        Assert.Contains("netstandard2.0", reason, StringComparison.Ordinal);
#else
        Assert.True(available, reason);
        Assert.Equal(KqueueFlavor.LibKqueue, KqueueLibrary.Flavor);
        using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Kqueue });
        Assert.Equal(EventLoopBackend.Kqueue, loop.Backend);
#endif
    }

    [SkippableFact]
    public void Auto_never_picks_kqueue_on_Linux()
    {
        Skip.IfNot(Platform.IsLinux, "Linux only");
        Skip.IfNot(string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable)), BackendFactory.EnvironmentVariable + " is set");
        Assert.Equal(EventLoopBackend.Epoll, BackendFactory.Resolve(EventLoopBackend.Auto));
        using var loop = new EventLoop();
        Assert.Equal(EventLoopBackend.Epoll, loop.Backend);
    }

#if !EPOLLSHARP_NETSTANDARD2_0
    [Fact]
    public void The_resolver_answers_only_for_the_kqueue_name()
    {
        var assembly = typeof(KqueueLibrary).Assembly;
        Assert.Equal(IntPtr.Zero, KqueueLibrary.Resolve(Interop.Libraries.Libc, assembly, null));
        Assert.Equal(IntPtr.Zero, KqueueLibrary.Resolve("libc", assembly, null));
        IntPtr kqueue = KqueueLibrary.Resolve(Interop.Libraries.Kqueue, assembly, null);
        Assert.Equal(BackendFactory.IsAvailable(EventLoopBackend.Kqueue, out _), kqueue != IntPtr.Zero);
    }

    [SkippableFact]
    public void The_assemblys_other_imports_still_bind_once_the_resolver_is_installed()
    {
        Skip.IfNot(Platform.IsLinux, "the other imports (epoll, eventfd) are Linux's");
        System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(Interop.Kqueue).TypeHandle);
        using var epoll = EpollHandle.Create();
        using var eventFd = EventFdHandle.Create();
        epoll.Add(eventFd, EpollEvents.In, 7);
        Assert.True(eventFd.Signal());
        var events = new EpollEvent[4];
        Assert.Equal(1, epoll.Wait(events, 1000));
        Assert.Equal(7ul, events[0].Data);
    }
#endif

    [Fact]
    public void Unavailable_reasons_are_sentences()
    {
        foreach (OS os in Enum.GetValues(typeof(OS)).Cast<OS>())
        {
            foreach (bool byPath in new[] { true, false })
            {
                foreach (string? env in new[] { null, "/x/libkqueue.so" })
                {
                    string? reason = KqueueLibrary.MakePlan(env, os, is64BitProcess: true, canLoadByPath: byPath).UnavailableReason;
                    if (reason is not null)
                    {
                        Assert.EndsWith(".", reason, StringComparison.Ordinal);
                        Assert.Contains("kqueue", reason, StringComparison.OrdinalIgnoreCase);
                    }
                }
            }
        }
    }
}
