using System.Diagnostics.Metrics;

namespace EpollSharp.Tests.Connections;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// The <c>EpollSharp</c> meter, read with a <see cref="MeterListener"/> as dotnet-counters and OpenTelemetry read it. Other
/// tests run loops at the same time, so every assertion looks only at the measurements tagged with this test's loop.
/// </summary>
public class MetricsTests
{
    /// <summary>Collects the EpollSharp measurements of one loop: the last value of each observed instrument (per tag set), and the histograms' records.</summary>
    private sealed class Collector : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly ConcurrentDictionary<string, double> _last = new();
        private readonly ConcurrentDictionary<string, HistogramBox> _histograms = new();
        private int _loopId;

        public Collector()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == "EpollSharp")
                {
                    _histograms.TryAdd(instrument.Name, new HistogramBox());
                    Instruments.Enqueue(instrument);
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => On(i, v, tags));
            _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => On(i, v, tags));
            _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => On(i, v, tags));
            _listener.Start();
        }

        public bool MissingBackendTag { get; private set; }

        private sealed class HistogramBox
        {
            public int Records;
            public double Sum;
        }

        public ConcurrentQueue<Instrument> Instruments { get; } = new();

        public void Follow(EventLoop loop) => _loopId = loop.Id;

        /// <summary>The last observed value of <paramref name="name"/> for the loop, with an extra tag value when given (a reason).</summary>
        public double Value(string name, string? extra = null)
        {
            _listener.RecordObservableInstruments();
            return _last.TryGetValue(Key(name, extra), out double value) ? value : 0;
        }

        public int Records(string name)
        {
            HistogramBox box = _histograms.GetValueOrDefault(name) ?? new HistogramBox();
            lock (box)
            {
                return box.Records;
            }
        }

        public double Sum(string name)
        {
            HistogramBox box = _histograms.GetValueOrDefault(name) ?? new HistogramBox();
            lock (box)
            {
                return box.Sum;
            }
        }

        public void Dispose() => _listener.Dispose();

        private static string Key(string name, string? extra) => extra is null ? name : name + "|" + extra;

        private void On(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            // Runs on the recording thread (the loop's, for the histograms): allocates nothing, so that the allocation test
            // measures the library and not this collector.
            bool ours = false;
            bool hasBackend = false;
            string? extra = null;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                switch (tag.Key)
                {
                    case "epollsharp.loop.id":
                        ours = tag.Value is int id && id == Volatile.Read(ref _loopId);
                        break;
                    case "epollsharp.loop.backend":
                        hasBackend = tag.Value is string { Length: > 0 };
                        break;
                    default:
                        extra = (string?)tag.Value;
                        break;
                }
            }

            if (!ours)
            {
                return;
            }

            if (!hasBackend)
            {
                MissingBackendTag = true;
            }

            if (instrument is Histogram<int> or Histogram<double>)
            {
                HistogramBox box = _histograms[instrument.Name];
                lock (box)
                {
                    box.Records++;
                    box.Sum += value;
                }
            }
            else
            {
                _last[Key(instrument.Name, extra)] = value;
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_loop_instruments_count_what_the_loop_does(EventLoopBackend backend)
    {
        using var metrics = new Collector();
        using EventLoop loop = Backends.CreateLoop(backend);
        metrics.Follow(loop);
        using var harness = new LoopHarness(loop);
        using var pair = SocketPair.Create();
        int callbacks = 0;
        loop.Register(pair.Local, Interest.Readable, (r, _) =>
        {
            r.Socket!.Receive(new byte[64]);
            Interlocked.Increment(ref callbacks);
        });
        using LoopTimer timer = loop.Schedule(TimeSpan.FromHours(1), _ => { });
        for (int i = 0; i < 20; i++)
        {
            pair.Peer.Send(new byte[] { 1 });
            LoopHarness.WaitUntil(() => Volatile.Read(ref callbacks) == i + 1, "the callback ran");
        }

        harness.Invoke(() => 0);
        Assert.True(metrics.Value("epollsharp.loop.iterations") >= 20);
        Assert.True(metrics.Value("epollsharp.loop.events") >= 20);
        Assert.Equal(1, metrics.Value("epollsharp.loop.registrations"));
        Assert.Equal(1, metrics.Value("epollsharp.loop.timers"));
        Assert.True(metrics.Value("epollsharp.loop.wakeups") >= 1, "posts from the test thread woke the loop");
        Assert.True(metrics.Records("epollsharp.loop.events_per_wait") >= 20);
        Assert.True(metrics.Sum("epollsharp.loop.events_per_wait") >= 20);
        Assert.True(metrics.Records("epollsharp.loop.callback.duration") >= 20, "every callback's duration is recorded while the histogram is enabled");
        Assert.True(metrics.Value("epollsharp.loop.busy_time") > 0);
        Assert.True(metrics.Value("epollsharp.loop.wait_time") > 0);
        Assert.Contains(metrics.Instruments, i => i.Name == "epollsharp.loop.busy_time" && i.Unit == "s" && i.Description!.Length > 0);
        Assert.False(metrics.MissingBackendTag, "every measurement has the backend tag");
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void An_event_for_a_registration_disposed_in_the_same_wait_is_counted_stale(EventLoopBackend backend)
    {
        using var metrics = new Collector();
        using EventLoop loop = Backends.CreateLoop(backend);
        metrics.Follow(loop);
        using var harness = new LoopHarness(loop);
        using var a = SocketPair.Create();
        using var b = SocketPair.Create();
        Registration? ra = null, rb = null;

        // Whichever callback runs first disposes the other registration, whose event in the same batch is then stale.
        harness.Invoke(() =>
        {
            ra = loop.Register(a.Local, Interest.Readable, (r, _) =>
            {
                r.Socket!.Receive(new byte[8]);
                rb!.Dispose();
            });
            rb = loop.Register(b.Local, Interest.Readable, (r, _) =>
            {
                r.Socket!.Receive(new byte[8]);
                ra!.Dispose();
            });
            return 0;
        });

        // Both become readable while the loop is held, so that one wait returns both events.
        using var hold = new ManualResetEventSlim();
        using var held = new ManualResetEventSlim();
        loop.Post(() =>
        {
            held.Set();
            hold.Wait(10_000);
        });
        Assert.True(held.Wait(10_000), "the loop is held");
        a.Peer.Send(new byte[] { 1 });
        b.Peer.Send(new byte[] { 1 });
        Thread.Sleep(50);
        hold.Set();
        harness.Invoke(() => 0);
        Assert.Equal(1, metrics.Value("epollsharp.loop.stale_events"));
        Assert.Equal(1, metrics.Value("epollsharp.loop.events"));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void The_connection_instruments_count_connections_by_close_reason_and_their_bytes(EventLoopBackend backend)
    {
        using var metrics = new Collector();
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { MaxConnections = 1 });
        metrics.Follow(server.Loop);
        long sent = 0;
        for (int i = 0; i < 2; i++)
        {
            using Socket client = server.Connect();
            byte[] data = SocketTestExtensions.Pattern(i, 10_000 * (i + 1));
            client.Send(data);
            Assert.Equal(data, client.ReceiveExactly(data.Length));
            sent += data.Length;
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(client.ReceiveToEnd());
            LoopHarness.WaitUntil(() => handler.Closed == i + 1, "the connection closed");
        }

        using (Socket rude = server.Connect())
        {
            rude.Send(new byte[] { 5 });
            Assert.Equal(new byte[] { 5 }, rude.ReceiveExactly(1));
            sent += 1;

            // A second client while this one is open: the limit of 1 pauses accepting.
            using Socket waiting = server.Connect();
            LoopHarness.WaitUntil(() => server.Listener.IsAcceptPaused, "accepting paused at the limit");
            Assert.Equal(1, metrics.Value("epollsharp.active_connections"));
            rude.LingerState = new LingerOption(true, 0);
            rude.Dispose();
            waiting.Send(new byte[] { 6 });
            Assert.Equal(new byte[] { 6 }, waiting.ReceiveExactly(1));
            sent += 1;
        }

        LoopHarness.WaitUntil(() => handler.Closed == 4, "every connection closed");
        Assert.Equal(4, metrics.Value("epollsharp.opened_connections"));
        Assert.Equal(0, metrics.Value("epollsharp.active_connections"));
        Assert.Equal(1, metrics.Value("epollsharp.closed_connections", "reset"));
        Assert.Equal(3, metrics.Value("epollsharp.closed_connections", "completed"));
        Assert.Equal(sent, metrics.Value("epollsharp.connection.bytes_received"));
        Assert.Equal(sent, metrics.Value("epollsharp.connection.bytes_sent"));
        // At least the pause provoked above (a client that connects just as the previous one closes may meet the limit too).
        Assert.True(metrics.Value("epollsharp.accept_pauses", "connection_limit") >= 1);
        Assert.Equal(0, metrics.Value("epollsharp.accept_pauses", "descriptor_limit"));
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void A_client_that_stops_reading_is_counted_as_a_write_pause(EventLoopBackend backend)
    {
        using var metrics = new Collector();
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler, new ListenerOptions { Connection = { HighWatermark = 64 * 1024, LowWatermark = 16 * 1024, SocketSendBufferSize = 16 * 1024 } });
        metrics.Follow(server.Loop);
        using Socket client = server.Connect();
        client.ReceiveBufferSize = 16 * 1024;
        byte[] chunk = new byte[64 * 1024];
        var sender = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < 64; i++)
                {
                    client.Send(chunk);
                }
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        });
        sender.Start();
        LoopHarness.WaitUntil(() => handler.WritePausedCount >= 1, "the echo's output backed up");
        Assert.True(metrics.Value("epollsharp.connection.write_pauses") >= 1);
        client.Dispose();
        sender.Join(20_000);
    }

    [SkippableTheory]
    [MemberData(nameof(Backends.All), MemberType = typeof(Backends))]
    public void With_every_instrument_enabled_a_steady_echo_allocates_nothing_on_the_loop(EventLoopBackend backend)
    {
        using var metrics = new Collector();
        var handler = new EchoHandler();
        using var server = new EchoServer(backend, handler);
        metrics.Follow(server.Loop);
        using Socket client = server.Connect();
        byte[] message = SocketTestExtensions.Pattern(2, 64);
        void RoundTrips(int count)
        {
            for (int i = 0; i < count; i++)
            {
                client.Send(message);
                Assert.Equal(message, client.ReceiveExactly(message.Length));
            }
        }

        RoundTrips(2_000);
        long before = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread);
        RoundTrips(10_000);
        long allocated = server.Harness.Invoke(GC.GetAllocatedBytesForCurrentThread) - before;
        Assert.True(allocated < 1024, $"{allocated} bytes allocated on the loop thread for 10,000 messages with a listener on every instrument");
        Assert.True(metrics.Records("epollsharp.loop.callback.duration") >= 10_000);
    }
}
