using System;
using System.Collections.Generic;
using System.Globalization;
using EpollSharp.Native;
#if NET7_0_OR_GREATER
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
#endif

namespace EpollSharp.Backends;

/// <summary>
/// Finds the library that exports <c>kqueue</c> and <c>kevent</c>, decides the <see cref="KqueueFlavor"/>, and says
/// why the kqueue backend is unavailable when it is. Decided once per process, on first use.
/// </summary>
/// <remarks>
/// <para>On .NET 7 and later the interop binds the logical name <see cref="Interop.Libraries.Kqueue"/>, which
/// <c>InstallResolver</c> maps (a <c>NativeLibrary</c> DllImport resolver on this assembly, installed here rather than in
/// the interop layer, which does not depend on the backends; returning
/// <see cref="IntPtr.Zero"/> for every other name, so the assembly's other imports are resolved as before) to:</para>
/// <list type="bullet">
/// <item>the file named by <c>EPOLLSHARP_KQUEUE_LIBRARY</c>, when it is set (libkqueue on Linux);</item>
/// <item>otherwise the C library: <c>/usr/lib/libSystem.B.dylib</c> (then "libc") on macOS, <c>libc.so.7</c> on FreeBSD.</item>
/// </list>
/// <para>The netstandard2.0 build has no <c>NativeLibrary</c>: it imports "libc", which the runtime maps to the C
/// library on macOS and FreeBSD, and it cannot load a library by path, so on Linux the backend is unavailable there.</para>
/// </remarks>
internal static class KqueueLibrary
{
    /// <summary>The environment variable that names a kqueue library to load instead of the C library.</summary>
    internal const string EnvironmentVariable = "EPOLLSHARP_KQUEUE_LIBRARY";

    private static readonly Lazy<State> s_state = new(Load);

    /// <summary>The operating systems the decision distinguishes.</summary>
    internal enum HostOS
    {
        MacOS,
        FreeBsd,
        Linux,
        Other,
    }

    /// <summary>The flavour of the loaded library. Only meaningful when <see cref="IsAvailable"/> is true.</summary>
    internal static KqueueFlavor Flavor => s_state.Value.Flavor;

    /// <summary>Where the library came from, for messages and docs ("the C library (libc.so.7)", "EPOLLSHARP_KQUEUE_LIBRARY=...").</summary>
    internal static string Source => s_state.Value.Source;

    internal static HostOS CurrentOS =>
        Platform.IsMacOS ? HostOS.MacOS : Platform.IsFreeBSD ? HostOS.FreeBsd : Platform.IsLinux ? HostOS.Linux : HostOS.Other;

    /// <summary>Whether this build can load a library by path (it has <c>NativeLibrary</c>).</summary>
    internal static bool CanLoadByPath =>
#if NET7_0_OR_GREATER
        true;
#else
        false;
#endif

    /// <summary>Whether the kqueue backend can be created in this process; when not, why.</summary>
    internal static bool IsAvailable(out string reason)
    {
        State state = s_state.Value;
        reason = state.UnavailableReason ?? string.Empty;
        return state.UnavailableReason is null;
    }

    /// <summary>Throws <see cref="PlatformNotSupportedException"/> with the reason when the backend is unavailable.</summary>
    internal static void ThrowIfUnavailable()
    {
        if (!IsAvailable(out string reason))
        {
            throw new PlatformNotSupportedException(reason);
        }
    }

    /// <summary>
    /// The decision, without touching the file system: which library names to try and which flavour they have, or why
    /// there is none. Pure, so that every platform's answer can be tested on any platform.
    /// </summary>
    /// <param name="environmentValue">The value of <c>EPOLLSHARP_KQUEUE_LIBRARY</c> (null or blank: unset).</param>
    /// <param name="os">The operating system.</param>
    /// <param name="is64BitProcess">Whether pointers are 64 bits wide.</param>
    /// <param name="canLoadByPath">Whether this build has <c>NativeLibrary</c> (not netstandard2.0).</param>
    internal static Plan MakePlan(string? environmentValue, HostOS os, bool is64BitProcess, bool canLoadByPath)
    {
        if (!is64BitProcess)
        {
            return Plan.Unavailable(
                "The kqueue backend needs a 64-bit process: it carries each registration's 64-bit token in kevent.udata, which is pointer-sized.");
        }

        bool overridden = !string.IsNullOrWhiteSpace(environmentValue);
        bool bsd = os is HostOS.MacOS or HostOS.FreeBsd;
        KqueueFlavor nativeFlavor = os == HostOS.FreeBsd ? KqueueFlavor.FreeBsd : KqueueFlavor.Darwin;
        if (overridden && canLoadByPath)
        {
            string path = environmentValue!.Trim();
            if (bsd)
            {
                // A kqueue library on macOS or FreeBSD has the system's ABI: only the file changes.
                return Plan.Of(nativeFlavor, EnvironmentVariable + "=" + path, path);
            }

            if (os == HostOS.Linux)
            {
                return Plan.Of(KqueueFlavor.LibKqueue, EnvironmentVariable + "=" + path, path);
            }

            return Plan.Unavailable(
                $"{EnvironmentVariable} is set, but a kqueue emulation is supported on Linux only (libkqueue); kqueue is native to macOS and FreeBSD.");
        }

        if (overridden && !bsd)
        {
            return Plan.Unavailable(
                $"{EnvironmentVariable} is set, but this is the netstandard2.0 build of EpollSharp, which cannot load a library by path (it has no NativeLibrary); use the net8.0 or later build to run the kqueue backend over libkqueue.");
        }

        switch (os)
        {
            case HostOS.MacOS:
                return canLoadByPath
                    ? Plan.Of(KqueueFlavor.Darwin, "the C library (/usr/lib/libSystem.B.dylib)", "/usr/lib/libSystem.B.dylib", "libc")
                    : Plan.Of(KqueueFlavor.Darwin, "the C library (DllImport \"libc\")", "libc");
            case HostOS.FreeBsd:
                return canLoadByPath
                    ? Plan.Of(KqueueFlavor.FreeBsd, "the C library (libc.so.7)", "libc.so.7")
                    : Plan.Of(KqueueFlavor.FreeBsd, "the C library (DllImport \"libc\")", "libc");
            case HostOS.Linux:
                return Plan.Unavailable(canLoadByPath
                    ? $"kqueue is native to macOS and FreeBSD; on Linux, set {EnvironmentVariable} to the path of libkqueue.so (the libkqueue emulation) to use this backend."
                    : "kqueue is native to macOS and FreeBSD; this netstandard2.0 build cannot load the libkqueue emulation on Linux (use the net8.0 or later build).");
            default:
                return Plan.Unavailable("kqueue needs macOS or FreeBSD (or Linux with libkqueue named by " + EnvironmentVariable + ").");
        }
    }

#if NET7_0_OR_GREATER
    /// <summary>
    /// Maps <see cref="Interop.Libraries.Kqueue"/> to the loaded library for this assembly's imports. Called once, by
    /// <c>Load</c>, before the first candidate is loaded: every call into <see cref="Interop.Kqueue"/> comes after
    /// <see cref="IsAvailable"/>, <see cref="ThrowIfUnavailable"/> or <see cref="Flavor"/>, which run <c>Load</c> first, so
    /// the resolver is in place before the first import binds. Every other name gets <see cref="IntPtr.Zero"/>: the runtime then
    /// resolves it as if there were no resolver. If another resolver was set on this assembly first, the name is resolved
    /// through the load context's <c>ResolvingUnmanagedDll</c> event instead, which the runtime raises when its own
    /// probing fails (as it does for this logical name).
    /// </summary>
    private static void InstallResolver()
    {
        Assembly assembly = typeof(KqueueLibrary).Assembly;
        try
        {
            NativeLibrary.SetDllImportResolver(assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            AssemblyLoadContext? context = AssemblyLoadContext.GetLoadContext(assembly);
            if (context is not null)
            {
                context.ResolvingUnmanagedDll += (requester, name) => requester == assembly ? Resolve(name, requester, null) : IntPtr.Zero;
            }
        }
    }

    /// <summary>The resolver: the kqueue library for <see cref="Interop.Libraries.Kqueue"/>, <see cref="IntPtr.Zero"/> for anything else.</summary>
    internal static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (!string.Equals(libraryName, Interop.Libraries.Kqueue, StringComparison.Ordinal))
        {
            return IntPtr.Zero;
        }

        State state = s_state.Value;
        return state.UnavailableReason is null ? state.Handle : IntPtr.Zero;
    }

    private static State Load()
    {
        Plan plan = MakePlan(Environment.GetEnvironmentVariable(EnvironmentVariable), CurrentOS, Environment.Is64BitProcess, CanLoadByPath);
        if (plan.UnavailableReason is not null)
        {
            return State.Unavailable(plan.UnavailableReason);
        }

        InstallResolver();
        var failures = new List<string>();
        foreach (string candidate in plan.Candidates)
        {
            IntPtr handle;
            try
            {
                handle = NativeLibrary.Load(candidate);
            }
            catch (Exception ex) when (ex is DllNotFoundException or BadImageFormatException)
            {
                failures.Add(ex.Message);
                continue;
            }

            if (NativeLibrary.TryGetExport(handle, "kqueue", out _) && NativeLibrary.TryGetExport(handle, "kevent", out _))
            {
                return new State(handle, plan.Flavor, plan.Source, null);
            }

            NativeLibrary.Free(handle);
            failures.Add(candidate + " does not export kqueue and kevent.");
        }

        return State.Unavailable(string.Format(
            CultureInfo.InvariantCulture,
            "The kqueue backend could not load {0}: {1}",
            plan.Source,
            string.Join(" ", failures)));
    }
#else
    private static State Load()
    {
        Plan plan = MakePlan(Environment.GetEnvironmentVariable(EnvironmentVariable), CurrentOS, Environment.Is64BitProcess, CanLoadByPath);
        if (plan.UnavailableReason is not null)
        {
            return State.Unavailable(plan.UnavailableReason);
        }

        // No NativeLibrary: the only way to know whether "libc" resolves and exports kqueue is to call it.
        try
        {
            int fd = Interop.Kqueue.kqueue();
            if (fd < 0)
            {
                int errno = Interop.Errno.Last();
                return State.Unavailable("kqueue() failed with errno " + errno.ToString(CultureInfo.InvariantCulture) + ".");
            }

            new Microsoft.Win32.SafeHandles.SafeFileHandle(new IntPtr(fd), ownsHandle: true).Dispose();
            return new State(IntPtr.Zero, plan.Flavor, plan.Source, null);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return State.Unavailable("The kqueue backend could not bind kqueue from " + plan.Source + ": " + ex.Message);
        }
    }
#endif

    /// <summary>What <see cref="MakePlan"/> decided.</summary>
    internal sealed class Plan
    {
        private Plan(KqueueFlavor flavor, string source, string[] candidates, string? unavailableReason)
        {
            Flavor = flavor;
            Source = source;
            Candidates = candidates;
            UnavailableReason = unavailableReason;
        }

        /// <summary>The ABI of the library.</summary>
        public KqueueFlavor Flavor { get; }

        /// <summary>Where the library comes from, for messages.</summary>
        public string Source { get; }

        /// <summary>The names or paths to load, in order; the first that loads and exports kqueue and kevent wins.</summary>
        public IReadOnlyList<string> Candidates { get; }

        /// <summary>Why there is no library; null when there are candidates.</summary>
        public string? UnavailableReason { get; }

        internal static Plan Of(KqueueFlavor flavor, string source, params string[] candidates) => new(flavor, source, candidates, null);

        internal static Plan Unavailable(string reason) => new(KqueueFlavor.Darwin, string.Empty, Array.Empty<string>(), reason);
    }

    private sealed class State
    {
        public State(IntPtr handle, KqueueFlavor flavor, string source, string? unavailableReason)
        {
            Handle = handle;
            Flavor = flavor;
            Source = source;
            UnavailableReason = unavailableReason;
        }

        public IntPtr Handle { get; }

        public KqueueFlavor Flavor { get; }

        public string Source { get; }

        public string? UnavailableReason { get; }

        public static State Unavailable(string reason) => new(IntPtr.Zero, KqueueFlavor.Darwin, string.Empty, reason);
    }
}
