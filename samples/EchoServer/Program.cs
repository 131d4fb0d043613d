using System;
using System.Collections.Generic;
using System.Net;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using EpollSharp;
using EpollSharp.Connections;

namespace EchoServer;

/// <summary>
/// An echo server on EpollSharp: N event loops (one thread each), a listener per loop with SO_REUSEPORT or one acceptor,
/// graceful shutdown on SIGINT/SIGTERM, and one line of statistics at the end.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        EchoOptions options;
        try
        {
            options = EchoOptions.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(EchoOptions.Usage);
            return 2;
        }

        if (options.Help)
        {
            Console.WriteLine(EchoOptions.Usage);
            return 0;
        }

        // Open stderr now: .NET opens the console streams lazily (dup of the descriptor), and the handler writes to it when
        // accepting pauses, which is when the process may have no descriptor left to give.
        Console.Error.Flush();

        var handler = new EchoHandler();
        var loopOptions = new EventLoopOptions
        {
            Backend = options.Backend,
            UnhandledExceptionHandler = static ex => Console.Error.WriteLine("error: " + ex),
            CallbackBudget = options.CallbackBudget,
        };
        var listenerOptions = new ListenerOptions
        {
            MaxConnections = options.MaxConnections,
            Connection = { TriggerMode = options.Trigger, IdleTimeout = options.IdleTimeout },
        };

        // SIGINT (Ctrl+C) and SIGTERM start a graceful shutdown instead of ending the process.
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
            Console.Error.WriteLine($"backend {EchoOptions.BackendName(options.Backend)}: {e.Message}");
            return 1;
        }

        foreach (EventLoop loop in group.Loops)
        {
            // One line on stderr for a callback that holds its loop past the budget (while it runs, and when it returns).
            loop.SlowCallback += static (_, e) => Console.Error.WriteLine("slow callback: " + e);
        }

        using var disposeGroup = group;
        IReadOnlyList<ConnectionListener> listeners;
        try
        {
            listeners = options.SocketActivation
                ? ListenOnActivatedSockets(group, handler, listenerOptions)
                : group.Listen(new IPEndPoint(options.Host, options.Port), handler, listenerOptions, options.AcceptMode);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or PlatformNotSupportedException or InvalidOperationException)
        {
            string where = options.SocketActivation ? "the sockets passed by socket activation" : $"{options.Host}:{options.Port}";
            Console.Error.WriteLine($"cannot listen on {where}: {e.Message}");
            return 1;
        }

        Console.WriteLine($"listening on {listeners[0].LocalEndPoint} backend={EchoOptions.BackendName(group.Backend)} loops={group.Loops.Count}");

        // Until a signal, or until a loop dies (an exception the handler let through stops it).
        Task.WaitAny(stop.Task, group.Completion);
        bool graceful = group.ShutdownAsync(options.DrainTimeout).Wait(options.DrainTimeout + TimeSpan.FromSeconds(10));
        Console.WriteLine($"stats: connections={group.AcceptedCount} bytes={handler.BytesEchoed} allocated={GC.GetTotalAllocatedBytes(true)}");
        return graceful && !group.Completion.IsFaulted ? 0 : 1;
    }

    /// <summary>Serves every socket that socket activation passed (systemd, or systemd-socket-activate).</summary>
    private static IReadOnlyList<ConnectionListener> ListenOnActivatedSockets(EventLoopGroup group, ConnectionHandler handler, ListenerOptions listenerOptions)
    {
        IReadOnlyList<ActivatedSocket> sockets = SocketActivation.TakeSockets();
        if (sockets.Count == 0)
        {
            throw new InvalidOperationException("--systemd: no sockets were passed (LISTEN_FDS and LISTEN_PID are not set for this process).");
        }

        var listeners = new List<ConnectionListener>();
        foreach (ActivatedSocket socket in sockets)
        {
            listeners.Add(group.ListenOnSocket(socket.Socket, handler, listenerOptions));
        }

        return listeners;
    }
}
