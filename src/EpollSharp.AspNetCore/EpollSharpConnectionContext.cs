using System;
using System.Buffers;
using System.Collections;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Net;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Connections;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace EpollSharp.AspNetCore;

/// <summary>
/// One accepted connection as Kestrel sees it: a <see cref="ConnectionContext"/> over a <see cref="PipeConnection"/>. It is its
/// own feature collection (the transport's features are answered without a lookup table; the features Kestrel and its
/// middleware add are kept in two short arrays).
/// </summary>
internal sealed class EpollSharpConnectionContext : ConnectionContext, IFeatureCollection,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IConnectionLifetimeFeature,
    IConnectionEndPointFeature, IMemoryPoolFeature
{
    private static readonly long s_idSeed = DateTime.UtcNow.Ticks;

    private readonly PipeConnection _connection;
    private readonly TaskCompletionSource<bool> _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Type[]? _extraKeys;
    private object[]? _extraValues;
    private int _extraCount;
    private string? _connectionId;
    private IDictionary<object, object?>? _items;
    private CancellationToken _connectionClosed;
    private int _revision;

    public EpollSharpConnectionContext(PipeConnection connection, MemoryPool<byte> memoryPool)
    {
        _connection = connection;
        Transport = new DuplexPipe(connection.Transport.Input, new TransportOutput(connection.Transport.Output));
        LocalEndPoint = connection.LocalEndPoint;
        RemoteEndPoint = connection.RemoteEndPoint;
        _connectionClosed = connection.ConnectionClosed;
        MemoryPool = memoryPool;
    }

    /// <summary>Completes when Kestrel has disposed the connection (the PipeConnectionHandler's application task).</summary>
    public Task Released => _released.Task;

    public PipeConnection PipeConnection => _connection;

    public override string ConnectionId
    {
        // Kestrel's style of id: 13 characters of base 32, unique in the process and unlikely to repeat across restarts.
        get => _connectionId ??= FormatId(s_idSeed + _connection.Id);
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => this;

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public override CancellationToken ConnectionClosed
    {
        get => _connectionClosed;
        set => _connectionClosed = value;
    }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    // IFeatureCollection.
    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _revision;

    object? IFeatureCollection.this[Type key]
    {
        get
        {
            ArgumentNullException.ThrowIfNull(key);

            // Kestrel asks for features on every request (most of them absent): a scan of two short arrays, no enumerator.
            Type[]? keys = _extraKeys;
            for (int i = 0; i < _extraCount; i++)
            {
                if (keys![i] == key)
                {
                    return _extraValues![i];
                }
            }

            return IsOwnFeature(key) ? this : null;
        }

        set
        {
            ArgumentNullException.ThrowIfNull(key);
            _revision++;
            for (int i = 0; i < _extraCount; i++)
            {
                if (_extraKeys![i] == key)
                {
                    if (value is null)
                    {
                        _extraCount--;
                        Array.Copy(_extraKeys, i + 1, _extraKeys, i, _extraCount - i);
                        Array.Copy(_extraValues!, i + 1, _extraValues!, i, _extraCount - i);
                        _extraKeys[_extraCount] = null!;
                        _extraValues![_extraCount] = null!;
                    }
                    else
                    {
                        _extraValues![i] = value;
                    }

                    return;
                }
            }

            if (value is not null)
            {
                if (_extraKeys is null || _extraCount == _extraKeys.Length)
                {
                    int size = _extraKeys is null ? 8 : _extraKeys.Length * 2;
                    Array.Resize(ref _extraKeys, size);
                    Array.Resize(ref _extraValues, size);
                }

                _extraKeys[_extraCount] = key;
                _extraValues![_extraCount] = value;
                _extraCount++;
            }
        }
    }

    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default => (TFeature?)((IFeatureCollection)this)[typeof(TFeature)];

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default => ((IFeatureCollection)this)[typeof(TFeature)] = instance;

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator()
    {
        var seen = new HashSet<Type>();
        var extra = new KeyValuePair<Type, object>[_extraCount];
        for (int i = 0; i < extra.Length; i++)
        {
            extra[i] = new KeyValuePair<Type, object>(_extraKeys![i], _extraValues![i]);
        }

        foreach (KeyValuePair<Type, object> pair in extra)
        {
            seen.Add(pair.Key);
            yield return pair;
        }

        foreach (Type type in s_ownFeatures)
        {
            if (!seen.Contains(type))
            {
                yield return new KeyValuePair<Type, object>(type, this);
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => ((IEnumerable<KeyValuePair<Type, object>>)this).GetEnumerator();

    /// <summary>Resets the connection (RST; what was not sent is dropped), as Kestrel asks when it gives up on a connection.</summary>
    public override void Abort(ConnectionAbortedException abortReason) => _connection.Abort();

    void IConnectionLifetimeFeature.Abort() => _connection.Abort();

    /// <summary>
    /// Kestrel is done with the connection: both pipes are completed (what was flushed is sent, then FIN), and the task
    /// completes once the connection has closed.
    /// </summary>
    public override ValueTask DisposeAsync()
    {
        ValueTask closing = _connection.DisposeAsync();
        _released.TrySetResult(true);
        return closing;
    }

    private static readonly Type[] s_ownFeatures =
    {
        typeof(IConnectionIdFeature), typeof(IConnectionTransportFeature), typeof(IConnectionItemsFeature),
        typeof(IConnectionLifetimeFeature), typeof(IConnectionEndPointFeature), typeof(IMemoryPoolFeature),
    };

    private static bool IsOwnFeature(Type key) =>
        key == typeof(IConnectionIdFeature) || key == typeof(IConnectionTransportFeature) || key == typeof(IConnectionItemsFeature)
        || key == typeof(IConnectionLifetimeFeature) || key == typeof(IConnectionEndPointFeature) || key == typeof(IMemoryPoolFeature);

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    private static string FormatId(long id)
    {
        const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
        return string.Create(13, id, static (span, value) =>
        {
            for (int i = span.Length - 1; i >= 0; i--)
            {
                span[i] = Alphabet[(int)(value & 31)];
                value >>= 5;
            }
        });
    }
}
