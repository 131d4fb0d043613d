using System;
using System.Net.Sockets;
#if !NET5_0_OR_GREATER
using System.Reflection;
#endif

namespace EpollSharp.Backends;

/// <summary>
/// The two socket APIs of .NET 5+ that the managed backend uses beyond Select/Available/Receive/Send: a <see cref="Socket"/>
/// over an existing descriptor that does not own it, and <c>Socket.GetRawSocketOption</c>. The netstandard2.0 build cannot
/// name them, but the runtimes that load it on Linux, macOS and Windows today have them: it binds them once by reflection
/// (as <see cref="SocketHandles"/> does for <c>Socket.SafeHandle</c>) and calls them through cached delegates, so a call
/// allocates nothing. Where a runtime lacks them, <see cref="CanWrap"/> / <see cref="CanReadRawOption"/> are false.
/// </summary>
internal static class ManagedSocketApi
{
#if NET5_0_OR_GREATER
    /// <summary>Whether <see cref="TryWrap"/> can make a socket.</summary>
    public static bool CanWrap => true;

    /// <summary>Whether <see cref="GetRawOption"/> works.</summary>
    public static bool CanReadRawOption => true;

    /// <summary>A <see cref="Socket"/> over <paramref name="descriptor"/> that never closes it; null when this runtime cannot make one.</summary>
    /// <exception cref="SocketException">The descriptor is not a socket the runtime can wrap.</exception>
    public static Socket? TryWrap(IntPtr descriptor)
    {
        var handle = new SafeSocketHandle(descriptor, ownsHandle: false);
        try
        {
            return new Socket(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>getsockopt with a raw level and name into <paramref name="value"/>; returns the length written.</summary>
    /// <exception cref="SocketException">The option cannot be read.</exception>
    public static int GetRawOption(Socket socket, int level, int name, Span<byte> value) => socket.GetRawSocketOption(level, name, value);
#else
    private static readonly Type? s_safeSocketHandle = typeof(Socket).Assembly.GetType("System.Net.Sockets.SafeSocketHandle", throwOnError: false);
    private static readonly ConstructorInfo? s_handleConstructor = s_safeSocketHandle?.GetConstructor(new[] { typeof(IntPtr), typeof(bool) });
    private static readonly ConstructorInfo? s_socketConstructor = s_safeSocketHandle is null ? null : typeof(Socket).GetConstructor(new[] { s_safeSocketHandle });
    private static readonly RawOptionGetter? s_getRawOption = BindGetRawOption();

    private delegate int RawOptionGetter(Socket socket, int level, int name, Span<byte> value);

    /// <summary>Whether <see cref="TryWrap"/> can make a socket.</summary>
    public static bool CanWrap => s_handleConstructor is not null && s_socketConstructor is not null;

    /// <summary>Whether <see cref="GetRawOption"/> works.</summary>
    public static bool CanReadRawOption => s_getRawOption is not null;

    /// <summary>A <see cref="Socket"/> over <paramref name="descriptor"/> that never closes it; null when this runtime cannot make one.</summary>
    /// <exception cref="SocketException">The descriptor is not a socket the runtime can wrap.</exception>
    public static Socket? TryWrap(IntPtr descriptor)
    {
        if (!CanWrap)
        {
            return null;
        }

        var handle = (IDisposable)s_handleConstructor!.Invoke(new object[] { descriptor, false });
        try
        {
            return (Socket)s_socketConstructor!.Invoke(new object[] { handle });
        }
        catch (TargetInvocationException e) when (e.InnerException is SocketException inner)
        {
            handle.Dispose();
            throw inner;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>getsockopt with a raw level and name into <paramref name="value"/>; returns the length written.</summary>
    /// <exception cref="SocketException">The option cannot be read.</exception>
    /// <exception cref="PlatformNotSupportedException">This runtime has no Socket.GetRawSocketOption.</exception>
    public static int GetRawOption(Socket socket, int level, int name, Span<byte> value)
    {
        RawOptionGetter getter = s_getRawOption ?? throw new PlatformNotSupportedException("Socket.GetRawSocketOption needs .NET 5 or later.");
        return getter(socket, level, name, value);
    }

    private static RawOptionGetter? BindGetRawOption()
    {
        try
        {
            MethodInfo? method = typeof(Socket).GetMethod("GetRawSocketOption", new[] { typeof(int), typeof(int), typeof(Span<byte>) });
            return method is null || method.ReturnType != typeof(int)
                ? null
                : (RawOptionGetter)Delegate.CreateDelegate(typeof(RawOptionGetter), method);
        }
        catch (ArgumentException)
        {
            // Another Span<byte> than the runtime's (an old System.Memory): not bindable.
            return null;
        }
    }
#endif
}
