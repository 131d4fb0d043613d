using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using EpollSharp.Native;

namespace EpollSharp.Tests.Native;

/// <summary>
/// Tests that close descriptors and then look at descriptor numbers (EBADF on a closed number, the number
/// leaving /proc/self/fd) run alone: a test running in parallel could otherwise get the same number.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FdNumberCollection
{
    public const string Name = "Descriptor numbers (not parallel)";
}

/// <summary>A connected TCP pair on 127.0.0.1: <see cref="Client"/> connected to <see cref="Server"/> (the accepted socket).</summary>
internal sealed class SocketPair : IDisposable
{
    public SocketPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        Client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Client.Connect(listener.LocalEndPoint!);
        Server = listener.Accept();
        Server.NoDelay = true;
    }

    public Socket Client { get; }

    public Socket Server { get; }

    /// <summary>The descriptor number of the server side.</summary>
    public int ServerFd => (int)Server.SafeHandle.DangerousGetHandle();

    /// <summary>The descriptor number of the client side.</summary>
    public int ClientFd => (int)Client.SafeHandle.DangerousGetHandle();

    /// <summary>Makes the client reset the connection (RST) when it is disposed.</summary>
    public void ResetOnClose() => Client.LingerState = new LingerOption(true, 0);

    public void Dispose()
    {
        Client.Dispose();
        Server.Dispose();
    }
}

/// <summary>Helpers that read the kernel's view of this process's descriptors.</summary>
internal static class Fds
{
    /// <summary>O_CLOEXEC as /proc/self/fdinfo prints it (octal 02000000).</summary>
    public const int OCloExec = 0x80000;

    /// <summary>O_NONBLOCK (octal 04000).</summary>
    public const int ONonBlock = 0x800;

    /// <summary>
    /// Whether /proc/self/fd lists <paramref name="fd"/>. Uses readlink (through <see cref="FileSystemInfo.LinkTarget"/>),
    /// which opens nothing: listing the directory would open a descriptor and take the lowest free number,
    /// which is the one just closed.
    /// </summary>
    public static bool IsOpen(int fd)
    {
        try
        {
            return LinkTarget(fd) is not null;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>What /proc/self/fd/N points at, such as <c>anon_inode:[eventpoll]</c>.</summary>
    public static string? LinkTarget(int fd) =>
        new FileInfo("/proc/self/fd/" + fd.ToString(CultureInfo.InvariantCulture)).LinkTarget;

    /// <summary>The "flags:" field of /proc/self/fdinfo/N (printed in octal by the kernel).</summary>
    public static int Flags(int fd) => Convert.ToInt32(FdInfo(fd)["flags"], 8);

    public static Dictionary<string, string> FdInfo(int fd)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadAllLines("/proc/self/fdinfo/" + fd.ToString(CultureInfo.InvariantCulture)))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && !result.ContainsKey(line[..colon]))
            {
                result[line[..colon]] = line[(colon + 1)..].Trim();
            }
        }

        return result;
    }

    /// <summary>A descriptor number that is certainly not open: above any RLIMIT_NOFILE this process can have.</summary>
    public const int NeverOpen = int.MaxValue - 1;
}

/// <summary>Waiting helpers that tolerate spurious events, as mio's test utilities do.</summary>
internal static class Waits
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Waits until an event with <paramref name="data"/> and all of <paramref name="expected"/> arrives,
    /// ignoring others. Fails after <see cref="Patience"/>.
    /// </summary>
    public static EpollEvent WaitFor(EpollHandle epoll, ulong data, EpollEvents expected)
    {
        var buffer = new EpollEvent[16];
        var deadline = Stopwatch.StartNew();
        var seen = new List<EpollEvent>();
        while (deadline.Elapsed < Patience)
        {
            int n = epoll.Wait(buffer, 100);
            for (int i = 0; i < n; i++)
            {
                if (buffer[i].Data == data && (buffer[i].Events & expected) == expected)
                {
                    return buffer[i];
                }

                seen.Add(buffer[i]);
            }
        }

        throw new Xunit.Sdk.XunitException($"No event {expected} for data 0x{data:x} within {Patience}; saw: {string.Join(", ", seen)}");
    }

    /// <summary>All events of one zero-timeout wait.</summary>
    public static EpollEvent[] Poll(EpollHandle epoll, int capacity = 64)
    {
        var buffer = new EpollEvent[capacity];
        int n = epoll.Wait(buffer, 0);
        return buffer.AsSpan(0, n).ToArray();
    }
}

/// <summary>libc calls the tests need and the library does not bind.</summary>
internal static partial class TestLibc
{
    public const int SIGUSR1 = 10; // same value on x86-64 and arm64

    [LibraryImport("libc.so.6", EntryPoint = "gettid")]
    public static partial int gettid();

    [LibraryImport("libc.so.6", EntryPoint = "tgkill", SetLastError = true)]
    public static partial int tgkill(int tgid, int tid, int sig);
}
