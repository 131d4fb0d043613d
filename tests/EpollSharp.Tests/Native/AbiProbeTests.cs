using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using EpollSharp.Native;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Native;


/// <summary>
/// Checks every ABI fact the binding hard-codes against the C headers of this machine, as Tmds.LibC does:
/// <c>native/probe/epoll_probe.c</c> is compiled with <c>cc</c> and run, and each "NAME VALUE" line it prints
/// is compared with the managed side. Without a C compiler the tests are skipped, except under CI
/// (<c>CI=true</c>), where a missing compiler is a failure: CI machines have gcc.
/// </summary>
public sealed class AbiProbeTests
{
    private static readonly Lazy<CProbe> s_probe = new(RunProbe);

    private readonly ITestOutputHelper _output;

    public AbiProbeTests(ITestOutputHelper output) => _output = output;

    /// <summary>C name of each EpollEvents member.</summary>
    private static readonly Dictionary<string, string> s_flagNames = new(StringComparer.Ordinal)
    {
        [nameof(EpollEvents.In)] = "EPOLLIN",
        [nameof(EpollEvents.Pri)] = "EPOLLPRI",
        [nameof(EpollEvents.Out)] = "EPOLLOUT",
        [nameof(EpollEvents.Err)] = "EPOLLERR",
        [nameof(EpollEvents.Hup)] = "EPOLLHUP",
        [nameof(EpollEvents.RdNorm)] = "EPOLLRDNORM",
        [nameof(EpollEvents.RdBand)] = "EPOLLRDBAND",
        [nameof(EpollEvents.WrNorm)] = "EPOLLWRNORM",
        [nameof(EpollEvents.WrBand)] = "EPOLLWRBAND",
        [nameof(EpollEvents.Msg)] = "EPOLLMSG",
        [nameof(EpollEvents.RdHup)] = "EPOLLRDHUP",
        [nameof(EpollEvents.Exclusive)] = "EPOLLEXCLUSIVE",
        [nameof(EpollEvents.Wakeup)] = "EPOLLWAKEUP",
        [nameof(EpollEvents.OneShot)] = "EPOLLONESHOT",
        [nameof(EpollEvents.EdgeTriggered)] = "EPOLLET",
    };

    [SkippableFact]
    public void StructEpollEventLayoutMatches()
    {
        var probe = Probe();
        int size = probe.Get("SIZEOF_EPOLL_EVENT");
        int dataOffset = probe.Get("OFFSETOF_EPOLL_EVENT_DATA");
        Assert.Equal(0, probe.Get("OFFSETOF_EPOLL_EVENT_EVENTS"));
        Assert.Equal(8, probe.Get("SIZEOF_EPOLL_DATA"));

        Assert.Equal(size, EpollEventLayout.NativeSize);
        Assert.Equal(dataOffset, EpollEventLayout.DataOffset);
        if (EpollEventLayout.IsPacked)
        {
            Assert.Equal(size, Unsafe.SizeOf<EpollEventLayout.Packed>());
            Assert.Equal(size, Marshal.SizeOf<EpollEventLayout.Packed>());
            Assert.Equal(dataOffset, (int)Marshal.OffsetOf<EpollEventLayout.Packed>(nameof(EpollEventLayout.Packed.Data)));
        }
        else
        {
            Assert.Equal(size, Unsafe.SizeOf<EpollEventLayout.Aligned>());
            Assert.Equal(size, Marshal.SizeOf<EpollEventLayout.Aligned>());
            Assert.Equal(dataOffset, (int)Marshal.OffsetOf<EpollEventLayout.Aligned>(nameof(EpollEventLayout.Aligned.Data)));
            Assert.Equal(size, Unsafe.SizeOf<EpollEvent>()); // the public struct is the native one here
        }

        _output.WriteLine($"struct epoll_event: {size} bytes, data at {dataOffset} ({RuntimeInformation.ProcessArchitecture})");
    }

    [SkippableFact]
    public void EveryEpollEventsFlagMatches()
    {
        var probe = Probe();
        var members = Enum.GetNames(typeof(EpollEvents)).Where(n => n != nameof(EpollEvents.None)).ToList();
        Assert.Equal(members.OrderBy(n => n, StringComparer.Ordinal), s_flagNames.Keys.OrderBy(n => n, StringComparer.Ordinal)); // a new member needs its C name here and in the probe
        foreach (string member in members)
        {
            uint managed = (uint)(EpollEvents)Enum.Parse(typeof(EpollEvents), member);
            Assert.True(probe.Values.ContainsKey(s_flagNames[member]), $"the probe does not print {s_flagNames[member]}");
            Assert.True(managed == probe.GetUnsigned(s_flagNames[member]), $"EpollEvents.{member} = 0x{managed:x}, but {s_flagNames[member]} = 0x{probe.GetUnsigned(s_flagNames[member]):x}");
        }
    }

    [SkippableFact]
    public void EpollAndEventFdConstantsMatch()
    {
        var probe = Probe();
        Assert.Equal(Interop.Sys.EPOLL_CTL_ADD, probe.Get("EPOLL_CTL_ADD"));
        Assert.Equal(Interop.Sys.EPOLL_CTL_DEL, probe.Get("EPOLL_CTL_DEL"));
        Assert.Equal(Interop.Sys.EPOLL_CTL_MOD, probe.Get("EPOLL_CTL_MOD"));
        Assert.Equal(Interop.Sys.EPOLL_CLOEXEC, probe.Get("EPOLL_CLOEXEC"));
        Assert.Equal(Interop.Sys.EFD_CLOEXEC, probe.Get("EFD_CLOEXEC"));
        Assert.Equal(Interop.Sys.EFD_NONBLOCK, probe.Get("EFD_NONBLOCK"));
        Assert.Equal(Interop.Sys.EFD_SEMAPHORE, probe.Get("EFD_SEMAPHORE"));
    }

    [SkippableFact]
    public void EveryInteropSysConstantIsProbed()
    {
        var probe = Probe();
        foreach (var field in Constants(typeof(Interop.Sys)))
        {
            Assert.True(probe.Values.ContainsKey(field.Name), $"Interop.Sys.{field.Name} is not printed by the probe");
            if (field.FieldType == typeof(uint))
            {
                Assert.Equal((uint)field.GetRawConstantValue()!, probe.GetUnsigned(field.Name));
            }
            else
            {
                Assert.Equal((int)field.GetRawConstantValue()!, probe.Get(field.Name));
            }
        }
    }

    [SkippableFact]
    public void EveryErrnoConstantMatches()
    {
        var probe = Probe();
        var fields = Constants(typeof(Interop.Errno)).ToList();
        Assert.NotEmpty(fields);
        foreach (var field in fields)
        {
            Assert.True(probe.Values.ContainsKey(field.Name), $"Interop.Errno.{field.Name} is not printed by the probe");
            int managed = (int)field.GetRawConstantValue()!;
            Assert.True(managed == probe.Get(field.Name), $"Interop.Errno.{field.Name} = {managed}, but C says {probe.Get(field.Name)}");
        }
    }

    [SkippableFact]
    public void EverySocketOptionConstantMatches()
    {
        var probe = Probe();
        var fields = Constants(typeof(Interop.SocketOptions)).ToList();
        Assert.NotEmpty(fields);
        foreach (var field in fields)
        {
            Assert.True(probe.Values.ContainsKey(field.Name), $"Interop.SocketOptions.{field.Name} is not printed by the probe");
            int managed = (int)field.GetRawConstantValue()!;
            Assert.True(managed == probe.Get(field.Name), $"Interop.SocketOptions.{field.Name} = {managed}, but C says {probe.Get(field.Name)}");
        }
    }

    [SkippableFact]
    public void ProbePrintsNothingUnchecked()
    {
        var probe = Probe();
        var known = new HashSet<string>(StringComparer.Ordinal)
        {
            "SIZEOF_EPOLL_EVENT", "OFFSETOF_EPOLL_EVENT_DATA", "OFFSETOF_EPOLL_EVENT_EVENTS", "SIZEOF_EPOLL_DATA",
        };
        known.UnionWith(s_flagNames.Values);
        known.UnionWith(Constants(typeof(Interop.Sys)).Select(f => f.Name));
        known.UnionWith(Constants(typeof(Interop.Errno)).Select(f => f.Name));
        known.UnionWith(Constants(typeof(Interop.SocketOptions)).Select(f => f.Name));
        var unchecked_ = probe.Values.Keys.Where(k => !known.Contains(k)).ToList();
        Assert.True(unchecked_.Count == 0, "the probe prints values no test compares: " + string.Join(", ", unchecked_));
    }

    private static IEnumerable<FieldInfo> Constants(Type type) =>
        type.GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
            .Where(f => f.IsLiteral && (f.FieldType == typeof(int) || f.FieldType == typeof(uint)));

    private CProbe Probe()
    {
        var probe = s_probe.Value;
        if (probe.SkipReason is not null)
        {
            _output.WriteLine(probe.SkipReason);
            bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
            Assert.False(ci, "CI=true, so the ABI probe must run: " + probe.SkipReason);
            Skip.If(true, probe.SkipReason);
        }

        Assert.True(probe.Error is null, probe.Error);
        return probe;
    }

    private static CProbe RunProbe() => CProbe.Build("epoll_probe.c", new[] { "-std=c11", "-Wall", "-Wextra", "-Werror" });
}
