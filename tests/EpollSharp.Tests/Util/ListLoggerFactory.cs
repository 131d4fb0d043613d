using Microsoft.Extensions.Logging;

namespace EpollSharp.Tests.Util;

/// <summary>An <see cref="ILoggerFactory"/> that keeps every entry at or above <see cref="MinimumLevel"/>, for tests that read what was logged.</summary>
public sealed class ListLoggerFactory : ILoggerFactory
{
    public ListLoggerFactory(LogLevel minimumLevel = LogLevel.Trace) => MinimumLevel = minimumLevel;

    public LogLevel MinimumLevel { get; }

    public ConcurrentQueue<Entry> Entries { get; } = new();

    public ConcurrentQueue<string> Categories { get; } = new();

    public IEnumerable<Entry> WithId(int id) => Entries.Where(e => e.Id.Id == id);

    public ILogger CreateLogger(string categoryName)
    {
        Categories.Enqueue(categoryName);
        return new ListLogger(this, categoryName);
    }

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException();

    public void Dispose()
    {
    }

    public sealed record Entry(string Category, LogLevel Level, EventId Id, string Message, Exception? Exception, IReadOnlyList<KeyValuePair<string, object?>> State)
    {
        public object? this[string name] => State.FirstOrDefault(p => p.Key == name).Value;
    }

    private sealed class ListLogger : ILogger
    {
        private readonly ListLoggerFactory _factory;
        private readonly string _category;

        public ListLogger(ListLoggerFactory factory, string category)
        {
            _factory = factory;
            _category = category;
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= _factory.MinimumLevel;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Assert.True(IsEnabled(logLevel), $"Log called at {logLevel}, which is off: the caller must check first");
            var pairs = state as IReadOnlyList<KeyValuePair<string, object?>> ?? Array.Empty<KeyValuePair<string, object?>>();
            _factory.Entries.Enqueue(new Entry(_category, logLevel, eventId, formatter(state, exception), exception, pairs.ToArray()));
        }
    }
}
