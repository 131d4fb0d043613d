using EpollSharp.Backends;

namespace EpollSharp.Tests.Backends;

/// <summary><c>EPOLLSHARP_BACKEND=io_uring</c>: changes the process environment, so it runs with the other such tests, alone.</summary>
[Collection(ManagedEnvironmentCollection.Name)]
public sealed class IoUringEnvironmentTests
{
    [SkippableTheory]
    [InlineData("io_uring")]
    [InlineData("IO_URING")]
    [InlineData(" iouring ")]
    public void Environment_variable_makes_Auto_pick_io_uring(string value)
    {
        string? saved = Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, value);
            Assert.Equal(EventLoopBackend.IoUring, BackendFactory.Resolve(EventLoopBackend.Auto));
            Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
            using var loop = new EventLoop();
            Assert.Equal(EventLoopBackend.IoUring, loop.Backend);
        }
        finally
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, saved);
        }
    }

    [Fact]
    public void An_unknown_value_names_io_uring_among_the_choices()
    {
        string? saved = Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, "uring");
            var ex = Assert.Throws<InvalidOperationException>(() => BackendFactory.Resolve(EventLoopBackend.Auto));
            Assert.Contains("io_uring", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, saved);
        }
    }
}
