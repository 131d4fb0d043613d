using System.Diagnostics;
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
