using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace EpollSharp.AspNetCore.Tests;

/// <summary>
/// The factory and listener used directly, the way Kestrel uses them, on one backend: <see cref="TransportContractTests"/>
/// on the default one, <see cref="TransportContractTestsOnIoUring"/> on io_uring.
/// </summary>
public abstract class TransportContractCases
{
    /// <summary>The backend the transport's loops run on; <see cref="EventLoopBackend.Auto"/> leaves the option as it is.</summary>
    protected abstract EventLoopBackend Backend { get; }

    private EpollSharpTransportFactory Factory(Action<EpollSharpTransportOptions>? configure = null)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the EpollSharp transport is tested on Linux");
        var options = new EpollSharpTransportOptions { LoopCount = 2 };
        if (Backend != EventLoopBackend.Auto)
        {
            WebKit.SkipUnlessAvailable(Backend);
            options.Backend = Backend;
        }

        configure?.Invoke(options);
        return new EpollSharpTransportFactory(Options.Create(options), NullLoggerFactory.Instance);
    }

    [SkippableFact]
    public async Task Bind_accept_exchange_dispose_unbind()
    {
        using EpollSharpTransportFactory factory = Factory();
        Assert.True(factory.CanBind(new IPEndPoint(IPAddress.Loopback, 0)));
        Assert.True(factory.CanBind(new UnixDomainSocketEndPoint("/tmp/x.sock")));
        Assert.False(factory.CanBind(new DnsEndPoint("localhost", 80)));
        await Assert.ThrowsAsync<NotSupportedException>(async () => await factory.BindAsync(new DnsEndPoint("localhost", 80)));

        IConnectionListener listener = await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        if (Backend != EventLoopBackend.Auto)
        {
            Assert.Equal(Backend, factory.Group!.Backend);
        }

        var bound = Assert.IsType<IPEndPoint>(listener.EndPoint);
        Assert.NotEqual(0, bound.Port);

        using Socket client = WebKit.Connect(bound);
        ConnectionContext? context = await listener.AcceptAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.NotNull(context);
        Assert.Equal(client.LocalEndPoint, context!.RemoteEndPoint);
        Assert.Equal(bound, context.LocalEndPoint);
        Assert.False(string.IsNullOrEmpty(context.ConnectionId));
        Assert.Same(context.Transport, context.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionTransportFeature>()!.Transport);
        Assert.NotNull(context.Features.Get<Microsoft.AspNetCore.Connections.Features.IMemoryPoolFeature>()!.MemoryPool);

        client.Send("ping"u8.ToArray());
        ReadResult read = await context.Transport.Input.ReadAtLeastAsync(4).AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal("ping", Encoding.ASCII.GetString(read.Buffer.ToArray()));
        context.Transport.Input.AdvanceTo(read.Buffer.End);
        await context.Transport.Output.WriteAsync("pong"u8.ToArray());

        // DisposeAsync: what was written is sent, then FIN; it completes once the client closed too.
        ValueTask disposing = context.DisposeAsync();
        Assert.Equal("pong", Encoding.ASCII.GetString(client.ReceiveToEnd()));
        client.Shutdown(SocketShutdown.Send);
        await disposing.AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(context.ConnectionClosed.IsCancellationRequested);

        // After UnbindAsync: AcceptAsync returns null, and connecting is refused.
        await listener.UnbindAsync();
        Assert.Null(await listener.AcceptAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20)));
        SocketException refused = Assert.Throws<SocketException>(() => WebKit.Connect(bound).Dispose());
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
        await listener.DisposeAsync();
    }

    [SkippableFact]
    public async Task Abort_resets_the_connection_and_fires_ConnectionClosed()
    {
        using EpollSharpTransportFactory factory = Factory();
        IConnectionListener listener = await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        using Socket client = WebKit.Connect(listener.EndPoint);
        ConnectionContext context = (await listener.AcceptAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20)))!;
        var closed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        context.ConnectionClosed.Register(() => closed.TrySetResult(true));
        context.Abort(new ConnectionAbortedException("test"));
        Assert.True(await closed.Task.WaitAsync(TimeSpan.FromSeconds(20)));
        SocketException reset = Assert.Throws<SocketException>(() => client.Receive(new byte[16]));
        Assert.Equal(SocketError.ConnectionReset, reset.SocketErrorCode);
        await context.DisposeAsync();
        await listener.DisposeAsync();
    }

    [SkippableFact]
    public async Task Address_in_use_is_AddressInUseException()
    {
        using EpollSharpTransportFactory factory = Factory();
        IConnectionListener first = await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        await Assert.ThrowsAsync<AddressInUseException>(async () => await factory.BindAsync(first.EndPoint));
        using var other = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        other.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        other.Listen();
        await Assert.ThrowsAsync<AddressInUseException>(async () => await factory.BindAsync(other.LocalEndPoint!));
        await first.DisposeAsync();
    }

    [SkippableFact]
    public async Task Features_set_by_Kestrel_are_kept_replaced_and_removed()
    {
        using EpollSharpTransportFactory factory = Factory();
        IConnectionListener listener = await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        using Socket client = WebKit.Connect((IPEndPoint)listener.EndPoint);
        ConnectionContext context = (await listener.AcceptAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20)))!;
        IFeatureCollection features = context.Features;
        int revision = features.Revision;

        // More features than the first storage holds, so that it grows; each is found again, the transport's own too.
        var added = new List<object>();
        for (int i = 0; i < 12; i++)
        {
            object feature = Activator.CreateInstance(typeof(Marker<>).MakeGenericType(s_markerArguments[i]))!;
            features[feature.GetType()] = feature;
            added.Add(feature);
        }

        Assert.Equal(revision + 12, features.Revision);
        foreach (object feature in added)
        {
            Assert.Same(feature, features[feature.GetType()]);
        }

        Assert.Same(context, features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionIdFeature>());
        Assert.Null(features[typeof(Marker<Guid>)]);

        // Replaced, then removed (the others stay); a feature set over one of the transport's own wins until removed.
        var replacement = new Marker<int>();
        features[typeof(Marker<int>)] = replacement;
        Assert.Same(replacement, features.Get<Marker<int>>());
        features[typeof(Marker<int>)] = null;
        Assert.Null(features[typeof(Marker<int>)]);
        Assert.Same(added[^1], features[added[^1].GetType()]);
        Assert.Same(added[1], features[added[1].GetType()]);
        var items = new ItemsOverride();
        features.Set<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>(items);
        Assert.Same(items, features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>());
        features.Set<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>(null);
        Assert.Same(context, features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>());

        // Enumeration: the 11 left, then the transport's 6.
        List<KeyValuePair<Type, object>> all = features.ToList();
        Assert.Equal(11 + 6, all.Count);
        Assert.Equal(all.Count, all.Select(pair => pair.Key).Distinct().Count());
        Assert.Throws<ArgumentNullException>(() => features[null!]);

        context.Abort(new ConnectionAbortedException("test over"));
        await context.DisposeAsync();
        await listener.UnbindAsync();
    }

    private static readonly Type[] s_markerArguments =
    {
        typeof(int), typeof(long), typeof(short), typeof(byte), typeof(sbyte), typeof(uint),
        typeof(ulong), typeof(ushort), typeof(char), typeof(bool), typeof(double), typeof(float),
    };

    private sealed class Marker<T>
    {
    }

    private sealed class ItemsOverride : Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature
    {
        public IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();
    }

}

/// <summary>
/// The transport's contract on the default backend, its options' checks, and every accept mode on every backend.
/// </summary>
public class TransportContractTests : TransportContractCases
{
    /// <inheritdoc/>
    protected override EventLoopBackend Backend => EventLoopBackend.Auto;

    [SkippableFact]
    public void Options_are_checked_with_the_property_named()
    {
        var options = new EpollSharpTransportOptions();
        Assert.False(options.RunContinuationsOnLoop);
        Assert.Equal(16, options.MaxEventsPerWait);
        Assert.Equal("MaxEventsPerWait", Assert.Throws<ArgumentOutOfRangeException>(() => options.MaxEventsPerWait = 0).ParamName);
        Assert.Equal("MaxEventsPerWait", Assert.Throws<ArgumentOutOfRangeException>(() => options.MaxEventsPerWait = 65537).ParamName);
        Assert.Equal("LoopCount", Assert.Throws<ArgumentOutOfRangeException>(() => options.LoopCount = -1).ParamName);
        Assert.Equal("Backlog", Assert.Throws<ArgumentOutOfRangeException>(() => options.Backlog = 0).ParamName);
        Assert.Equal("InputPauseThreshold", Assert.Throws<ArgumentOutOfRangeException>(() => options.InputPauseThreshold = -1).ParamName);
        Assert.Equal("CloseTimeout", Assert.Throws<ArgumentOutOfRangeException>(() => options.CloseTimeout = TimeSpan.Zero).ParamName);
        Assert.Equal("AcceptMode", Assert.Throws<ArgumentOutOfRangeException>(() => options.AcceptMode = (GroupAcceptMode)99).ParamName);
        Assert.Equal("Backend", Assert.Throws<ArgumentOutOfRangeException>(() => options.Backend = (EventLoopBackend)99).ParamName);

        options.OutputPauseThreshold = 1000;
        options.OutputResumeThreshold = 2000;
        Assert.Equal("OutputResumeThreshold", Assert.Throws<ArgumentOutOfRangeException>(options.Validate).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new EpollSharpTransportFactory(Options.Create(options), NullLoggerFactory.Instance));
        Assert.Throws<ArgumentNullException>(() => ((Microsoft.AspNetCore.Hosting.IWebHostBuilder)null!).UseEpollSharp());
    }

    [SkippableTheory]
    [InlineData(GroupAcceptMode.ReusePort, EventLoopBackend.Epoll)]
    [InlineData(GroupAcceptMode.SingleAcceptor, EventLoopBackend.Epoll)]
    [InlineData(GroupAcceptMode.SingleAcceptor, EventLoopBackend.Managed)]
    [InlineData(GroupAcceptMode.ReusePort, EventLoopBackend.IoUring)]
    [InlineData(GroupAcceptMode.SingleAcceptor, EventLoopBackend.IoUring)]
    public async Task Every_accept_mode_and_backend_serves_connections(GroupAcceptMode mode, EventLoopBackend backend)
    {
        WebKit.SkipUnlessAvailable(backend);
        await using WebServer server = await WebServer.StartAsync(
            app => Microsoft.AspNetCore.Builder.EndpointRouteBuilderExtensions.MapGet(app, "/", () => "ok"),
            transport: o =>
            {
                o.AcceptMode = mode;
                o.Backend = backend;
            });
        Assert.Equal(backend, server.Factory.Group!.Backend);
        Assert.Equal(mode == GroupAcceptMode.ReusePort ? 2 : 1, server.Factory.Group.Listeners.Count);
        var clients = Enumerable.Range(0, 8).Select(_ => server.Client()).ToArray();
        try
        {
            foreach (HttpClient client in clients)
            {
                Assert.Equal("ok", await client.GetStringAsync("/"));
            }
        }
        finally
        {
            foreach (HttpClient client in clients)
            {
                client.Dispose();
            }
        }

        Assert.Equal(8, server.Factory.Group.AcceptedCount);
    }
}

/// <summary>
/// The transport's contract with its loops on io_uring (connections and listeners on the completion path); skipped where
/// io_uring cannot be set up.
/// </summary>
public class TransportContractTestsOnIoUring : TransportContractCases
{
    /// <inheritdoc/>
    protected override EventLoopBackend Backend => EventLoopBackend.IoUring;
}
