using System;
using System.Buffers;
using System.Collections.Generic;
using System.Net;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;
using EpollSharp.Connections;
using Microsoft.AspNetCore.Connections;

namespace EpollSharp.AspNetCore;

/// <summary>
/// Kestrel's listener for one bound endpoint: the EpollSharp listeners (one per loop with <c>SO_REUSEPORT</c>, else one)
/// put each accepted connection in a queue that <see cref="AcceptAsync"/> takes from.
/// </summary>
internal sealed class EpollSharpConnectionListener : IConnectionListener
{
    private readonly Channel<EpollSharpConnectionContext> _accepted = Channel.CreateUnbounded<EpollSharpConnectionContext>(
        new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });

    private readonly MemoryPool<byte> _memoryPool;
    private IReadOnlyList<ConnectionListener> _listeners = Array.Empty<ConnectionListener>();
    private int _unbound;

    private EpollSharpConnectionListener(MemoryPool<byte> memoryPool)
    {
        _memoryPool = memoryPool;
        EndPoint = null!;
    }

    public EndPoint EndPoint { get; private set; }

    /// <summary>Binds <paramref name="endPoint"/> on <paramref name="group"/>'s loops.</summary>
    public static EpollSharpConnectionListener Bind(EventLoopGroup group, EndPoint endPoint, EpollSharpTransportOptions options)
    {
        var listener = new EpollSharpConnectionListener(MemoryPool<byte>.Shared);
        var handler = new PipeConnectionHandler(listener.OnConnection, options.ToPipeOptions());
        try
        {
            listener._listeners = group.Listen(endPoint, handler, options.ToListenerOptions(), options.AcceptMode);
        }
        catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse)
        {
            throw new AddressInUseException(e.Message, e);
        }

        listener.EndPoint = listener._listeners[0].LocalEndPoint;
        return listener;
    }

    /// <summary>The application of the connections' <see cref="PipeConnectionHandler"/>: queue the connection for Kestrel; it lives until Kestrel disposes it.</summary>
    private Task OnConnection(PipeConnection connection)
    {
        var context = new EpollSharpConnectionContext(connection, _memoryPool);
        if (Volatile.Read(ref _unbound) != 0 || !_accepted.Writer.TryWrite(context))
        {
            // Accepted just as Kestrel unbound: no one will take it.
            connection.Abort();
            return Task.CompletedTask;
        }

        return context.Released;
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        ChannelReader<EpollSharpConnectionContext> reader = _accepted.Reader;
        while (Volatile.Read(ref _unbound) == 0)
        {
            if (reader.TryRead(out EpollSharpConnectionContext? context))
            {
                return context;
            }

            if (!await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                break;
            }
        }

        return null;
    }

    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _unbound, 1) != 0)
        {
            return;
        }

        // Close the listening sockets on their loops and wait for that, so that new connections are refused from here on.
        var stops = new Task[_listeners.Count];
        for (int i = 0; i < stops.Length; i++)
        {
            stops[i] = StopAccepting(_listeners[i]);
        }

        _accepted.Writer.TryComplete();
        try
        {
            // A canceled token (Kestrel's Dispose passes one) only means: do not wait. The sockets close all the same.
            await Task.WhenAll(stops).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }

        // Connections accepted but not yet taken by Kestrel: no one will serve them.
        while (_accepted.Reader.TryRead(out EpollSharpConnectionContext? orphan))
        {
            orphan.Abort();
            _ = orphan.DisposeAsync();
        }
    }

    public ValueTask DisposeAsync() => UnbindAsync();

    private static Task StopAccepting(ConnectionListener listener)
    {
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!listener.Loop.TryPost(
            static state =>
            {
                var (l, d) = ((ConnectionListener, TaskCompletionSource<bool>))state!;
                l.StopAccepting();
                d.TrySetResult(true);
            },
            (listener, done)))
        {
            // The loop is gone: StopAccepting runs here.
            listener.StopAccepting();
            done.TrySetResult(true);
        }

        return done.Task;
    }
}
