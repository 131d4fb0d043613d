using EpollSharp.Backends;

namespace EpollSharp.Tests.Backends;

/// <summary>Tests that change the process environment run alone: no other test may resolve <see cref="EventLoopBackend.Auto"/> meanwhile.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ManagedEnvironmentCollection
{
    public const string Name = "Managed backend: process environment";
}

[Collection(ManagedEnvironmentCollection.Name)]
public sealed class ManagedBackendEnvironmentTests
{
    [Theory]
    [InlineData("managed")]
    [InlineData("MANAGED")]
    [InlineData("  Managed ")]
    public void Environment_variable_makes_Auto_pick_Managed(string value)
    {
        string? saved = Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, value);
            Assert.Equal(EventLoopBackend.Managed, BackendFactory.Resolve(EventLoopBackend.Auto));
            using var loop = new EventLoop();
            Assert.Equal(EventLoopBackend.Managed, loop.Backend);
            using var explicitAuto = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Auto });
            Assert.Equal(EventLoopBackend.Managed, explicitAuto.Backend);
        }
        finally
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, saved);
        }
    }

    [Fact]
    public void Environment_variable_does_not_override_an_explicit_backend()
    {
        string? saved = Environment.GetEnvironmentVariable(BackendFactory.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, "epoll");
            using var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.Managed });
            Assert.Equal(EventLoopBackend.Managed, loop.Backend);
        }
        finally
        {
            Environment.SetEnvironmentVariable(BackendFactory.EnvironmentVariable, saved);
        }
    }
}
