using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xunit.Abstractions;
using U = EpollSharp.Interop.IoUring;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// Checks every io_uring constant and layout the binding hard-codes (Interop.IoUring and its records) against the C
/// headers of this machine: <c>native/probe/io_uring_probe.c</c> is compiled with <c>cc</c> and run, and each "NAME VALUE"
/// line is compared with the managed side. Skipped without a C compiler, except under CI.
/// </summary>
public sealed class IoUringAbiTests
{
    private static readonly Lazy<CProbe> s_probe = new(() => CProbe.Build("io_uring_probe.c", new[] { "-std=c11", "-Wall", "-Wextra", "-Werror" }));

    /// <summary>Probe name → (managed size or offset). Filled from the records as the backend declares them.</summary>
    private static readonly Dictionary<string, int> s_layout = new(StringComparer.Ordinal)
    {
        ["SizeofIoSqringOffsets"] = Unsafe.SizeOf<Interop.IoSqringOffsets>(),
        ["IoSqringOffsetsArray"] = Offset<Interop.IoSqringOffsets>(nameof(Interop.IoSqringOffsets.Array)),
        ["SizeofIoCqringOffsets"] = Unsafe.SizeOf<Interop.IoCqringOffsets>(),
        ["IoCqringOffsetsCqes"] = Offset<Interop.IoCqringOffsets>(nameof(Interop.IoCqringOffsets.Cqes)),
        ["SizeofIoUringParams"] = Unsafe.SizeOf<Interop.IoUringParams>(),
        ["IoUringParamsFeatures"] = Offset<Interop.IoUringParams>(nameof(Interop.IoUringParams.Features)),
        ["IoUringParamsSqOff"] = Offset<Interop.IoUringParams>(nameof(Interop.IoUringParams.SqOff)),
        ["IoUringParamsCqOff"] = Offset<Interop.IoUringParams>(nameof(Interop.IoUringParams.CqOff)),
        ["SizeofIoUringSqe"] = Unsafe.SizeOf<Interop.IoUringSqe>(),
        ["IoUringSqeFd"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.Fd)),
        ["IoUringSqeOff"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.Off)),
        ["IoUringSqeAddr"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.Addr)),
        ["IoUringSqeLen"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.Len)),
        ["IoUringSqeOpFlags"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.OpFlags)),
        ["IoUringSqeUserData"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.UserData)),
        ["IoUringSqeAddr3"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.Addr3)),
        ["SizeofIoUringCqe"] = Unsafe.SizeOf<Interop.IoUringCqe>(),
        ["IoUringCqeRes"] = Offset<Interop.IoUringCqe>(nameof(Interop.IoUringCqe.Res)),
        ["IoUringCqeFlags"] = Offset<Interop.IoUringCqe>(nameof(Interop.IoUringCqe.Flags)),
        ["SizeofIoUringGeteventsArg"] = Unsafe.SizeOf<Interop.IoUringGeteventsArg>(),
        ["IoUringGeteventsArgTs"] = Offset<Interop.IoUringGeteventsArg>(nameof(Interop.IoUringGeteventsArg.Ts)),
        ["IoUringGeteventsArgMinWaitUsec"] = Offset<Interop.IoUringGeteventsArg>(nameof(Interop.IoUringGeteventsArg.MinWaitUsec)),
        ["SizeofKernelTimespec"] = Unsafe.SizeOf<Interop.KernelTimespec>(),
        ["SizeofIoUringProbeHeader"] = Unsafe.SizeOf<Interop.IoUringProbeHeader>(),
        ["SizeofIoUringProbeOp"] = Unsafe.SizeOf<Interop.IoUringProbeOp>(),
        ["IoUringProbeOpFlags"] = Offset<Interop.IoUringProbeOp>(nameof(Interop.IoUringProbeOp.Flags)),
        ["SizeofIoUringBufReg"] = Unsafe.SizeOf<Interop.IoUringBufReg>(),
        ["IoUringBufRegBgid"] = Offset<Interop.IoUringBufReg>(nameof(Interop.IoUringBufReg.Bgid)),
        ["SizeofIoUringBuf"] = Unsafe.SizeOf<Interop.IoUringBuf>(),
        ["IoUringBufBid"] = Offset<Interop.IoUringBuf>(nameof(Interop.IoUringBuf.Bid)),
        ["IoUringSqeBufIndex"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.BufIndex)),
        ["IoUringSqeIoPrio"] = Offset<Interop.IoUringSqe>(nameof(Interop.IoUringSqe.IoPrio)),
        ["SizeofIoUringRsrcRegister"] = Unsafe.SizeOf<Interop.IoUringRsrcRegister>(),
        ["IoUringRsrcRegisterData"] = Offset<Interop.IoUringRsrcRegister>(nameof(Interop.IoUringRsrcRegister.Data)),
        ["SizeofMsgHdr"] = Unsafe.SizeOf<Interop.MsgHdr>(),
        ["MsgHdrIov"] = Offset<Interop.MsgHdr>(nameof(Interop.MsgHdr.Iov)),
        ["MsgHdrIovLen"] = Offset<Interop.MsgHdr>(nameof(Interop.MsgHdr.IovLen)),
    };

    /// <summary>
    /// Constants newer than the oldest headers the tests run with (Debian 12's are Linux 6.1): the probe prints them only
    /// when the headers have them, and only then are they compared.
    /// </summary>
    private static readonly Dictionary<string, string> s_newerThanHeaders = new(StringComparer.Ordinal)
    {
        ["IORING_CQE_F_BUF_MORE"] = "6.12",
        ["IOU_PBUF_RING_INC"] = "6.12",
    };

    private readonly ITestOutputHelper _output;

    public IoUringAbiTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Every_io_uring_constant_matches_the_headers()
    {
        var probe = Probe();
        var fields = Constants().ToList();
        Assert.NotEmpty(fields);
        foreach (var field in fields)
        {
            if (!probe.Values.ContainsKey(field.Name) && s_newerThanHeaders.TryGetValue(field.Name, out string? since))
            {
                // The headers of this machine are older than the constant: the probe cannot print it.
                _output.WriteLine($"Interop.IoUring.{field.Name}: not in these headers (Linux {since} uapi), not checked");
                continue;
            }

            Assert.True(probe.Values.ContainsKey(field.Name), $"Interop.IoUring.{field.Name} is not printed by the probe");
            if (probe.Values[field.Name] == "absent")
            {
                // Newer than this machine's headers (IORING_FEAT_MIN_TIMEOUT: Linux 6.12): checked against the kernel below.
                _output.WriteLine($"{field.Name}: not in this machine's headers");
                continue;
            }

            long managed = Convert.ToInt64(field.GetRawConstantValue(), CultureInfo.InvariantCulture);
            long c = long.Parse(probe.Values[field.Name], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            Assert.True(managed == c, $"Interop.IoUring.{field.Name} = {managed}, but C says {c}");
        }

        _output.WriteLine($"{fields.Count} constants checked");
    }

    [SkippableFact]
    public void The_min_timeout_feature_bit_is_the_kernels()
    {
        // IORING_FEAT_MIN_TIMEOUT is newer than the 6.1 headers of some build machines: a kernel that honours
        // min_wait_usec (6.12 and later) reports this bit, and one before 6.12 does not.
        Skip.IfNot(EpollSharp.Backends.IoUringBackend.IsAvailable(out string reason), reason);
        Assert.True(EpollSharp.Backends.IoUringRing.TryCreate(8, 16, 0, out var ring, out string why, out _), why);
        using (ring)
        {
            bool minTimeout = (ring!.Features & U.IORING_FEAT_MIN_TIMEOUT) != 0;
            var release = Environment.OSVersion.Version;
            bool atLeast612 = release.Major > 6 || (release.Major == 6 && release.Minor >= 12);
            _output.WriteLine($"kernel {release}, features 0x{ring.Features:x}");
            Assert.Equal(atLeast612, minTimeout);
        }
    }

    [SkippableFact]
    public void Every_io_uring_record_has_the_C_size_and_offsets()
    {
        var probe = Probe();
        foreach (var (name, managed) in s_layout)
        {
            Assert.True(managed == probe.Get(name), $"{name}: managed {managed}, C {probe.Get(name)}");
        }

        // Also the sizes the marshaller sees, for the records passed by pointer.
        Assert.Equal(probe.Get("SizeofIoUringParams"), Marshal.SizeOf<Interop.IoUringParams>());
        Assert.Equal(probe.Get("SizeofIoUringSqe"), Marshal.SizeOf<Interop.IoUringSqe>());
        Assert.Equal(probe.Get("SizeofIoUringCqe"), Marshal.SizeOf<Interop.IoUringCqe>());
    }

    [SkippableFact]
    public void The_probe_prints_nothing_unchecked()
    {
        var probe = Probe();
        var known = new HashSet<string>(s_layout.Keys, StringComparer.Ordinal);
        known.UnionWith(Constants().Select(f => f.Name));
        var unchecked_ = probe.Values.Keys.Where(k => !known.Contains(k)).ToList();
        Assert.True(unchecked_.Count == 0, "the probe prints values no test compares: " + string.Join(", ", unchecked_));
    }

    private static IEnumerable<FieldInfo> Constants() =>
        typeof(U).GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic).Where(f => f.IsLiteral);

    private static int Offset<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    private CProbe Probe()
    {
        var probe = s_probe.Value;
        if (probe.SkipReason is not null)
        {
            bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
            Assert.False(ci, "CI=true, so the ABI probe must run: " + probe.SkipReason);
            Skip.If(true, probe.SkipReason);
        }

        Assert.True(probe.Error is null, probe.Error);
        return probe;
    }
}
