using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

public class EpollEventTests
{
    [Fact]
    public void ManagedLayoutIsNatural16Bytes()
    {
        Assert.Equal(16, Unsafe.SizeOf<EpollEvent>());
        Assert.Equal(16, Marshal.SizeOf<EpollEvent>());
        Assert.Equal(8, (int)Marshal.OffsetOf<EpollEvent>("_data"));
    }

    [Fact]
    public void PackedAndAlignedShapes()
    {
        Assert.Equal(12, Unsafe.SizeOf<EpollEventLayout.Packed>());
        Assert.Equal(12, Marshal.SizeOf<EpollEventLayout.Packed>());
        Assert.Equal(4, (int)Marshal.OffsetOf<EpollEventLayout.Packed>(nameof(EpollEventLayout.Packed.Data)));
        Assert.Equal(16, Unsafe.SizeOf<EpollEventLayout.Aligned>());
        Assert.Equal(16, Marshal.SizeOf<EpollEventLayout.Aligned>());
        Assert.Equal(8, (int)Marshal.OffsetOf<EpollEventLayout.Aligned>(nameof(EpollEventLayout.Aligned.Data)));
    }

    [Fact]
    public void LayoutFollowsTheArchitecture()
    {
        bool x86 = RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86;
        Assert.Equal(x86, EpollEventLayout.IsPacked);
        Assert.Equal(x86 ? 12 : 16, EpollEventLayout.NativeSize);
        Assert.Equal(x86 ? 4 : 8, EpollEventLayout.DataOffset);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(64)]
    public unsafe void WidenInPlaceTurnsPackedRecordsIntoEntries(int count)
    {
        // Writes packed 12-byte records the way the kernel does on x86-64, then widens them, on any architecture.
        var buffer = new EpollEvent[count + 1];
        var sentinel = new EpollEvent(EpollEvents.Msg, 0x5E5E_5E5E_5E5E_5E5EUL);
        buffer[count] = sentinel;
        fixed (EpollEvent* p = buffer)
        {
            byte* bytes = (byte*)p;
            for (int i = 0; i < count; i++)
            {
                var rec = (EpollEventLayout.Packed*)(bytes + (i * 12));
                rec->Events = (uint)(i * 3 + 1) | 0x8000_0000u;
                rec->Data = 0xF000_0000_0000_0000UL | (ulong)i << 32 | (uint)~i;
            }

            EpollEventLayout.WidenInPlace(p, count);
        }

        for (int i = 0; i < count; i++)
        {
            Assert.Equal((EpollEvents)((uint)(i * 3 + 1) | 0x8000_0000u), buffer[i].Events);
            Assert.Equal(0xF000_0000_0000_0000UL | (ulong)i << 32 | (uint)~i, buffer[i].Data);
        }

        Assert.Equal(sentinel, buffer[count]);
    }

    [Fact]
    public void ValueSemantics()
    {
        var a = new EpollEvent(EpollEvents.In | EpollEvents.RdHup, ulong.MaxValue);
        var b = new EpollEvent(EpollEvents.In | EpollEvents.RdHup, ulong.MaxValue);
        var c = new EpollEvent(EpollEvents.In, ulong.MaxValue);
        var d = new EpollEvent(EpollEvents.In | EpollEvents.RdHup, 1);
        Assert.Equal(EpollEvents.In | EpollEvents.RdHup, a.Events);
        Assert.Equal(ulong.MaxValue, a.Data);
        Assert.True(a == b);
        Assert.False(a != b);
        Assert.True(a.Equals(b));
        Assert.True(a.Equals((object)b));
        Assert.False(a.Equals((object?)null));
        Assert.False(a.Equals("x"));
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.True(a != c);
        Assert.True(a != d);
        Assert.Equal(default, new EpollEvent(EpollEvents.None, 0));
    }

    [Fact]
    public void ToStringShowsFlagsAndHexData()
    {
        Assert.Equal("{ Events = In, Out, Data = 0xdeadbeef }", new EpollEvent(EpollEvents.In | EpollEvents.Out, 0xDEADBEEF).ToString());
        Assert.Equal("{ Events = None, Data = 0x0 }", default(EpollEvent).ToString());
    }

    [Fact]
    public void FlagsAreDistinctSingleBits()
    {
        var values = Enum.GetValues(typeof(EpollEvents)).Cast<EpollEvents>().Where(v => v != EpollEvents.None).Select(v => (uint)v).ToList();
        Assert.Equal(15, values.Count);
        Assert.All(values, v => Assert.Equal(0u, v & (v - 1)));
        Assert.Equal(values.Count, values.Distinct().Count());
    }
}

public class NativeCallExceptionTests
{
    [Fact]
    public void CarriesErrnoNameAndOperation()
    {
        var e = new NativeCallException("epoll_ctl(EPOLL_CTL_ADD, fd 3)", 17, "message");
        Assert.Equal(17, e.Errno);
        Assert.Equal("EEXIST", e.ErrorName);
        Assert.Equal("epoll_ctl(EPOLL_CTL_ADD, fd 3)", e.Operation);
        Assert.Equal("message", e.Message);
        Assert.Equal(17, e.HResult);
    }

    [Fact]
    public void NullOperationThrows() =>
        Assert.Equal("operation", Assert.Throws<ArgumentNullException>(() => new NativeCallException(null!, 1, "m")).ParamName);

    [Fact]
    public void UnknownErrnoIsNamedByNumber() =>
        Assert.Equal("errno 999", new NativeCallException("op", 999, "m").ErrorName);

    public static TheoryData<string, int> ErrnoConstants()
    {
        var data = new TheoryData<string, int>();
        foreach (var field in typeof(Interop.Errno).GetFields(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public).Where(f => f.IsLiteral))
        {
            data.Add(field.Name, (int)field.GetRawConstantValue()!);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ErrnoConstants))]
    public void EveryErrnoConstantHasItsNameAndAMeaning(string name, int value)
    {
        Assert.Equal(name, ErrnoNames.NameOf(value));
        var e = ErrnoNames.Create("op(x)", value);
        Assert.Equal(value, e.Errno);
        Assert.Equal(name, e.ErrorName);
        Assert.Equal("op(x)", e.Operation);
        Assert.StartsWith($"op(x) failed with {name}: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnknownErrnoMessage() =>
        Assert.Equal("op failed with errno 77: the call failed.", ErrnoNames.Create("op", 77).Message);
}
