using System;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using EpollSharp;
using EpollSharp.Connections;
using Microsoft.Extensions.Logging;

namespace Snippets;

/// <summary>Operating a server (docs/articles/operating.md): logging to the console, and reading the EpollSharp meter in-process.</summary>
internal static class Operating
{
    public static void RunLogging()
    {
        var seen = new SeenEvents();

        #region logging
        using ILoggerFactory logs = LoggerFactory.Create(builder => builder
            .AddSimpleConsole(console => console.SingleLine = true)
            .SetMinimumLevel(LogLevel.Information));           // Debug adds connections that end in an error
        using var loop = new EventLoop(new EventLoopOptions { LoggerFactory = logs });
        #endregion

        logs.AddProvider(seen);
        using var listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        listener.Dispose();
        loop.Dispose();                                      // runs the stop the listener posted to the loop
        Program.Check(seen.Ids.Contains(100) && seen.Ids.Contains(101), "ListenerStarted (100) and ListenerStopped (101) were logged");
    }

    public static void RunMeterListener()
    {
        using var loop = new EventLoop();
        using var server = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), new Echo());
        System.Threading.Tasks.Task stopped = loop.Start();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(server.LocalEndPoint);
        client.Send(new byte[] { 1 });
        client.Receive(new byte[1]);

        #region meter-listener
        // In-process, e.g. for a health endpoint: the connections open now, summed over every loop of the process.
        long active = 0;
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "EpollSharp" && instrument.Name == "epollsharp.active_connections")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        meters.SetMeasurementEventCallback<long>((instrument, value, tags, state) => Interlocked.Add(ref active, value));
        meters.Start();
        meters.RecordObservableInstruments();                   // observed instruments report when asked
        Console.WriteLine($"active connections: {active}");
        #endregion

        Program.Check(active >= 1, "at least this snippet's connection is active");
        loop.Stop();
        stopped.Wait();
    }

    private sealed class Echo : ConnectionHandler
    {
        public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => connection.Write(data);
    }

    /// <summary>Remembers the event ids logged, to check the snippet.</summary>
    private sealed class SeenEvents : ILoggerProvider, ILogger
    {
        public ConcurrentBag<int> Ids { get; } = new();

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) => Ids.Add(eventId.Id);

        public void Dispose()
        {
        }
    }
}
