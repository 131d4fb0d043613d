using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using EpollSharp;
using EpollSharp.Connections;

namespace TcpProxy;

/// <summary>
/// A TCP proxy on EpollSharp: N event loops (one thread each) accept clients; for each, the loop that accepted it dials the
/// target and relays both ways (<see cref="ProxyHandler"/>). Graceful stop on SIGINT/SIGTERM, and one line of statistics.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        ProxyOptions options;
        try
        {
            options = ProxyOptions.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(ProxyOptions.Usage);
            return 2;
        }

        if (options.Help)
        {
            Console.WriteLine(ProxyOptions.Usage);
            return 0;
        }

        // Open stderr now (.NET opens the console streams lazily): the handler writes to it when accepting pauses, which
        // is when the process may have no descriptor left to give.
        Console.Error.Flush();

        var connectionOptions = new ConnectionOptions { TriggerMode = options.Trigger, IdleTimeout = options.IdleTimeout };
        var handler = new ProxyHandler(options.Target!, new ConnectOptions { ConnectTimeout = options.ConnectTimeout, Connection = connectionOptions });
        var loopOptions = new EventLoopOptions
        {
            Backend = options.Backend,
            UnhandledExceptionHandler = static ex => Console.Error.WriteLine("error: " + ex),
        };
        var listenerOptions = new ListenerOptions { Connection = connectionOptions };

        // SIGINT (Ctrl+C) and SIGTERM start a graceful stop instead of ending the process.
        var stop = new TaskCompletionSource<PosixSignal>(TaskCreationOptions.RunContinuationsAsynchronously);
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
        {
            context.Cancel = true;
            stop.TrySetResult(context.Signal);
        });
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            stop.TrySetResult(context.Signal);
        });

        EventLoopGroup group;
        try
        {
            group = new EventLoopGroup(options.Loops, loopOptions);
        }
        catch (PlatformNotSupportedException e)
        {
            Console.Error.WriteLine($"backend {ProxyOptions.BackendName(options.Backend)}: {e.Message}");
            return 1;
        }

        using var disposeGroup = group;
        IReadOnlyList<ConnectionListener> listeners;
        try
        {
            listeners = group.Listen(options.Listen, handler, listenerOptions);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or PlatformNotSupportedException)
        {
            Console.Error.WriteLine($"cannot listen on {options.Listen}: {e.Message}");
            return 1;
        }

        Console.WriteLine($"listening on {listeners[0].LocalEndPoint} backend={ProxyOptions.BackendName(group.Backend)} loops={group.Loops.Count}");

        // Until a signal, or until a loop dies.
        Task.WaitAny(stop.Task, group.Completion);
        bool graceful = group.ShutdownAsync(options.DrainTimeout).Wait(options.DrainTimeout + TimeSpan.FromSeconds(10));
        Console.WriteLine(
            $"stats: connections={group.AcceptedCount} bytes_to_target={handler.BytesToTarget} bytes_to_client={handler.BytesToClient} " +
            $"connect_failures={handler.ConnectFailures} resets_passed={handler.ResetsPassed} allocated={GC.GetTotalAllocatedBytes(true)}");
        return graceful && !group.Completion.IsFaulted ? 0 : 1;
    }
}
