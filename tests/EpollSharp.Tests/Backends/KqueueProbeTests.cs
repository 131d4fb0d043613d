using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using EpollSharp.Backends;
using Xunit.Abstractions;
using K = EpollSharp.Interop.Kqueue;

namespace EpollSharp.Tests.Backends;

using static EpollSharp.Tests.Util.ProcessTools;

/// <summary>
/// Compares the kqueue flavour in use with the C headers of its library: <c>native/probe/kqueue_probe.c</c> is compiled
/// and run, and every "NAME VALUE" line it prints is checked. It runs where the kqueue backend is available and the
/// headers are found: on macOS and FreeBSD (the system's <c>sys/event.h</c>), and on Linux when
/// <c>EPOLLSHARP_KQUEUE_LIBRARY</c> names libkqueue and its <c>sys/event.h</c> is found (<c>EPOLLSHARP_KQUEUE_INCLUDE</c>,
/// else <c>include/</c> next to the library as in libkqueue's build directory, else <c>../include/kqueue</c> or
/// <c>/usr/include/kqueue</c> as installed). Otherwise it is skipped, with the reason.
/// </summary>
public sealed class KqueueProbeTests
{
    private static readonly Lazy<CProbe> s_probe = new(RunProbe);

    private readonly ITestOutputHelper _output;

    public KqueueProbeTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void The_probe_is_of_the_flavour_the_backend_chose()
    {
        var probe = Probe();
        Assert.Equal(KqueueLibrary.Flavor.ToString(), probe.Values["FLAVOR"]);
        _output.WriteLine($"flavour {KqueueLibrary.Flavor} from {KqueueLibrary.Source}");
    }

    [SkippableFact]
    public void Struct_kevent_layout_matches()
    {
        var probe = Probe();
        int size = probe.Get("SIZEOF_KEVENT");
        Assert.Equal(KqueueAbi.For(KqueueLibrary.Flavor).EventSize, size);
        if (KqueueLibrary.Flavor == KqueueFlavor.FreeBsd)
        {
            Assert.Equal(size, Unsafe.SizeOf<K.KeventFreeBsd>());
            CheckOffsets<K.KeventFreeBsd>(probe);
            Assert.Equal(probe.Get("OFFSETOF_KEVENT_EXT"), Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.ext)));
            Assert.Equal(32, probe.Get("SIZEOF_KEVENT_EXT"));
            Assert.Equal(sizeof(long), probe.Get("SIZEOF_KEVENT_DATA"));
        }
        else
        {
            Assert.Equal(size, Unsafe.SizeOf<K.KeventDarwin>());
            CheckOffsets<K.KeventDarwin>(probe);
            Assert.Equal(IntPtr.Size, probe.Get("SIZEOF_KEVENT_DATA"));
        }

        Assert.Equal(IntPtr.Size, probe.Get("SIZEOF_KEVENT_IDENT"));
        Assert.Equal(IntPtr.Size, probe.Get("SIZEOF_KEVENT_UDATA"));
        Assert.Equal(Unsafe.SizeOf<K.Timespec>(), probe.Get("SIZEOF_TIMESPEC"));
        Assert.Equal(Offset<K.Timespec>(nameof(K.Timespec.tv_nsec)), probe.Get("OFFSETOF_TIMESPEC_TV_NSEC"));
        _output.WriteLine($"struct kevent: {size} bytes ({KqueueLibrary.Flavor})");
    }

    [SkippableFact]
    public void Constants_match()
    {
        var probe = Probe();
        KqueueAbi abi = KqueueAbi.For(KqueueLibrary.Flavor);
        Assert.Equal(K.EVFILT_READ, probe.Get("EVFILT_READ"));
        Assert.Equal(K.EVFILT_WRITE, probe.Get("EVFILT_WRITE"));
        Assert.Equal(K.EVFILT_TIMER, probe.Get("EVFILT_TIMER"));
        Assert.Equal(abi.EvfiltUser, probe.Get("EVFILT_USER"));
        Assert.Equal(K.EV_ADD, probe.Get("EV_ADD"));
        Assert.Equal(K.EV_DELETE, probe.Get("EV_DELETE"));
        Assert.Equal(K.EV_ENABLE, probe.Get("EV_ENABLE"));
        Assert.Equal(K.EV_DISABLE, probe.Get("EV_DISABLE"));
        Assert.Equal(K.EV_ONESHOT, probe.Get("EV_ONESHOT"));
        Assert.Equal(K.EV_CLEAR, probe.Get("EV_CLEAR"));
        Assert.Equal(K.EV_RECEIPT, probe.Get("EV_RECEIPT"));
        Assert.Equal(K.EV_DISPATCH, probe.Get("EV_DISPATCH"));
        Assert.Equal(K.EV_ERROR, probe.Get("EV_ERROR"));
        Assert.Equal(K.EV_EOF, probe.Get("EV_EOF"));
        Assert.Equal(K.NOTE_TRIGGER, (uint)probe.Get("NOTE_TRIGGER"));
        Assert.Equal(abi.NoteSeconds, (uint)probe.Get("NOTE_SECONDS"));
        Assert.Equal(abi.NoteMicroseconds, (uint)probe.Get("NOTE_USECONDS"));
        Assert.Equal(abi.NoteNanoseconds, (uint)probe.Get("NOTE_NSECONDS"));
        Assert.Equal(abi.NoteMilliseconds, probe.Values.ContainsKey("NOTE_MSECONDS") ? (uint)probe.Get("NOTE_MSECONDS") : 0u);
        string absolute = KqueueLibrary.Flavor == KqueueFlavor.FreeBsd ? "NOTE_ABSTIME" : "NOTE_ABSOLUTE";
        Assert.Equal(abi.NoteAbsolute, (uint)probe.Get(absolute));
    }

    [SkippableFact]
    public void The_probe_prints_nothing_unchecked()
    {
        var probe = Probe();
        var known = new HashSet<string>(StringComparer.Ordinal)
        {
            "FLAVOR", "SIZEOF_KEVENT", "OFFSETOF_KEVENT_IDENT", "OFFSETOF_KEVENT_FILTER", "OFFSETOF_KEVENT_FLAGS",
            "OFFSETOF_KEVENT_FFLAGS", "OFFSETOF_KEVENT_DATA", "OFFSETOF_KEVENT_UDATA", "SIZEOF_KEVENT_IDENT",
            "SIZEOF_KEVENT_DATA", "SIZEOF_KEVENT_UDATA", "OFFSETOF_KEVENT_EXT", "SIZEOF_KEVENT_EXT", "SIZEOF_TIMESPEC",
            "OFFSETOF_TIMESPEC_TV_NSEC", "EVFILT_READ", "EVFILT_WRITE", "EVFILT_TIMER", "EVFILT_USER", "EV_ADD",
            "EV_DELETE", "EV_ENABLE", "EV_DISABLE", "EV_ONESHOT", "EV_CLEAR", "EV_RECEIPT", "EV_DISPATCH", "EV_ERROR",
            "EV_EOF", "NOTE_TRIGGER", "NOTE_SECONDS", "NOTE_USECONDS", "NOTE_NSECONDS", "NOTE_MSECONDS",
            "NOTE_ABSOLUTE", "NOTE_ABSTIME",
        };
        var unchecked_ = probe.Values.Keys.Where(k => !known.Contains(k)).ToList();
        Assert.True(unchecked_.Count == 0, "the probe prints values no test compares: " + string.Join(", ", unchecked_));
    }

    private static void CheckOffsets<T>(CProbe probe)
    {
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_IDENT"), Offset<T>("ident"));
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_FILTER"), Offset<T>("filter"));
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_FLAGS"), Offset<T>("flags"));
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_FFLAGS"), Offset<T>("fflags"));
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_DATA"), Offset<T>("data"));
        Assert.Equal(probe.Get("OFFSETOF_KEVENT_UDATA"), Offset<T>("udata"));
    }

    private static int Offset<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    private CProbe Probe()
    {
        var probe = s_probe.Value;
        if (probe.SkipReason is not null)
        {
            _output.WriteLine(probe.SkipReason);
            Skip.If(true, probe.SkipReason);
        }

        Assert.True(probe.Error is null, probe.Error);
        return probe;
    }

    private static CProbe RunProbe()
    {
        if (!BackendFactory.IsAvailable(EventLoopBackend.Kqueue, out string reason))
        {
            return new CProbe { SkipReason = "the kqueue backend is unavailable here, so there is no kqueue library to probe: " + reason };
        }

        var args = new List<string> { "-std=gnu11", "-Wall", "-Wextra", "-Werror" };
        if (KqueueLibrary.Flavor == KqueueFlavor.LibKqueue)
        {
            string? include = FindLibKqueueHeaders();
            if (include is null)
            {
                return new CProbe { SkipReason = "libkqueue's sys/event.h was not found (set EPOLLSHARP_KQUEUE_INCLUDE to the directory that holds sys/event.h)" };
            }

            args.Add("-I");
            args.Add(include);
        }

        return CProbe.Build("kqueue_probe.c", args);
    }

    private static string? FindLibKqueueHeaders()
    {
        var candidates = new List<string>();
        string? explicitDir = Environment.GetEnvironmentVariable("EPOLLSHARP_KQUEUE_INCLUDE");
        if (!string.IsNullOrWhiteSpace(explicitDir))
        {
            candidates.Add(explicitDir.Trim());
        }

        string library = Environment.GetEnvironmentVariable(KqueueLibrary.EnvironmentVariable)!.Trim();
        string? libDir = Path.GetDirectoryName(Path.GetFullPath(library));
        if (libDir is not null)
        {
            candidates.Add(Path.Combine(libDir, "include"));
            candidates.Add(Path.Combine(libDir, "..", "include", "kqueue"));
        }

        candidates.Add("/usr/local/include/kqueue");
        candidates.Add("/usr/include/kqueue");
        return candidates.FirstOrDefault(d => File.Exists(Path.Combine(d, "sys", "event.h")));
    }
}
