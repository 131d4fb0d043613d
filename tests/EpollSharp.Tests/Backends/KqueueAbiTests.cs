using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using EpollSharp.Backends;
using K = EpollSharp.Interop.Kqueue;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// The kqueue ABI of each flavour, checked on any platform: struct layouts (Unsafe.SizeOf, Marshal.OffsetOf) and the
/// constants, against the values of the macOS, FreeBSD 12+ and libkqueue headers. KqueueProbeTests compares the flavour
/// in use with the C headers themselves when they are available.
/// </summary>
public class KqueueAbiTests
{
    [SkippableFact]
    public void Darwin_and_libkqueue_struct_kevent_is_32_bytes_with_pointer_sized_data_and_udata()
    {
        Skip.IfNot(Environment.Is64BitProcess, "the layouts are those of 64-bit processes, the only ones the backend supports");
        Assert.Equal(32, Unsafe.SizeOf<K.KeventDarwin>());
        Assert.Equal(32, Marshal.SizeOf<K.KeventDarwin>());
        Assert.Equal(0, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.ident)));
        Assert.Equal(8, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.filter)));
        Assert.Equal(10, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.flags)));
        Assert.Equal(12, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.fflags)));
        Assert.Equal(16, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.data)));
        Assert.Equal(24, Offset<K.KeventDarwin>(nameof(K.KeventDarwin.udata)));
        Assert.Equal(32, KqueueAbi.Darwin.EventSize);
        Assert.Equal(32, KqueueAbi.LibKqueue.EventSize);
    }

    [SkippableFact]
    public void FreeBSD_struct_kevent_is_64_bytes_with_64_bit_data_and_ext()
    {
        Skip.IfNot(Environment.Is64BitProcess, "the layouts are those of 64-bit processes, the only ones the backend supports");
        Assert.Equal(64, Unsafe.SizeOf<K.KeventFreeBsd>());
        Assert.Equal(64, Marshal.SizeOf<K.KeventFreeBsd>());
        Assert.Equal(0, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.ident)));
        Assert.Equal(8, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.filter)));
        Assert.Equal(10, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.flags)));
        Assert.Equal(12, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.fflags)));
        Assert.Equal(16, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.data)));
        Assert.Equal(24, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.udata)));
        Assert.Equal(32, Offset<K.KeventFreeBsd>(nameof(K.KeventFreeBsd.ext)));
        Assert.Equal(64, KqueueAbi.FreeBsd.EventSize);
    }

    [SkippableFact]
    public void Timespec_is_two_pointer_sized_fields()
    {
        Skip.IfNot(Environment.Is64BitProcess, "the layouts are those of 64-bit processes, the only ones the backend supports");
        Assert.Equal(16, Unsafe.SizeOf<K.Timespec>());
        Assert.Equal(8, Offset<K.Timespec>(nameof(K.Timespec.tv_nsec)));
    }

    [Fact]
    public void Constants_shared_by_every_flavour()
    {
        Assert.Equal(-1, K.EVFILT_READ);
        Assert.Equal(-2, K.EVFILT_WRITE);
        Assert.Equal(-7, K.EVFILT_TIMER);
        Assert.Equal(0x1, K.EV_ADD);
        Assert.Equal(0x2, K.EV_DELETE);
        Assert.Equal(0x4, K.EV_ENABLE);
        Assert.Equal(0x8, K.EV_DISABLE);
        Assert.Equal(0x10, K.EV_ONESHOT);
        Assert.Equal(0x20, K.EV_CLEAR);
        Assert.Equal(0x40, K.EV_RECEIPT);
        Assert.Equal(0x80, K.EV_DISPATCH);
        Assert.Equal(0x4000, K.EV_ERROR);
        Assert.Equal(0x8000, K.EV_EOF);
        Assert.Equal(0x01000000u, K.NOTE_TRIGGER);
    }

    [Fact]
    public void Darwin_constants()
    {
        KqueueAbi abi = KqueueAbi.For(KqueueFlavor.Darwin);
        Assert.Equal(KqueueFlavor.Darwin, abi.Flavor);
        Assert.Equal(-10, abi.EvfiltUser);
        Assert.Equal(0x1u, abi.NoteSeconds);
        Assert.Equal(0u, abi.NoteMilliseconds);
        Assert.Equal(0x2u, abi.NoteMicroseconds);
        Assert.Equal(0x4u, abi.NoteNanoseconds);
        Assert.Equal(0x8u, abi.NoteAbsolute);
    }

    [Fact]
    public void FreeBSD_constants()
    {
        KqueueAbi abi = KqueueAbi.For(KqueueFlavor.FreeBsd);
        Assert.Equal(KqueueFlavor.FreeBsd, abi.Flavor);
        Assert.Equal(-11, abi.EvfiltUser);
        Assert.Equal(0x1u, abi.NoteSeconds);
        Assert.Equal(0x2u, abi.NoteMilliseconds);
        Assert.Equal(0x4u, abi.NoteMicroseconds);
        Assert.Equal(0x8u, abi.NoteNanoseconds);
        Assert.Equal(0x10u, abi.NoteAbsolute);
    }

    [Fact]
    public void LibKqueue_constants()
    {
        KqueueAbi abi = KqueueAbi.For(KqueueFlavor.LibKqueue);
        Assert.Equal(KqueueFlavor.LibKqueue, abi.Flavor);
        Assert.Equal(-11, abi.EvfiltUser);
        Assert.Equal(0x1u, abi.NoteSeconds);
        Assert.Equal(0u, abi.NoteMilliseconds);
        Assert.Equal(0x2u, abi.NoteMicroseconds);
        Assert.Equal(0x4u, abi.NoteNanoseconds);
        Assert.Equal(0x8u, abi.NoteAbsolute);
    }

    [Theory]
    [InlineData((int)KqueueFlavor.Darwin)]
    [InlineData((int)KqueueFlavor.FreeBsd)]
    [InlineData((int)KqueueFlavor.LibKqueue)]
    public unsafe void A_change_is_written_in_the_flavours_layout_with_data_and_ext_zeroed(int flavorValue)
    {
        var flavor = (KqueueFlavor)flavorValue;
        KqueueAbi abi = KqueueAbi.For(flavor);
        var buffer = new byte[abi.EventSize * 2];
        buffer.AsSpan().Fill(0xFF);
        ulong token = 0xFEDC_BA98_7654_3210;
        fixed (byte* p = buffer)
        {
            abi.Write(p + abi.EventSize, 4242, K.EVFILT_WRITE, K.EV_ADD | K.EV_CLEAR, K.NOTE_TRIGGER, unchecked((nint)(long)token));
            KeventFields ev = abi.Read(p, 1);
            Assert.Equal((nuint)4242, ev.Ident);
            Assert.Equal(K.EVFILT_WRITE, ev.Filter);
            Assert.Equal(K.EV_ADD | K.EV_CLEAR, ev.Flags);
            Assert.Equal(K.NOTE_TRIGGER, ev.Fflags);
            Assert.Equal(0, ev.Data);
            Assert.Equal(token, (ulong)(long)ev.Udata); // the full 64-bit token survives udata
        }

        // The first event is untouched; the second is exactly the change: on FreeBSD, ext[4] (bytes 32..63) is zero.
        Assert.All(buffer.AsSpan(0, abi.EventSize).ToArray(), b => Assert.Equal(0xFF, b));
        if (flavor == KqueueFlavor.FreeBsd)
        {
            Assert.All(buffer.AsSpan(abi.EventSize + 32, 32).ToArray(), b => Assert.Equal(0, b));
        }

        Assert.All(buffer.AsSpan(abi.EventSize + 16, 8).ToArray(), b => Assert.Equal(0, b)); // data
    }

    private static int Offset<T>(string field) => (int)Marshal.OffsetOf<T>(field);
}
