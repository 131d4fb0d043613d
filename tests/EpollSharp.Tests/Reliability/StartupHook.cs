#pragma warning disable CA1050 // The runtime looks for a type named StartupHook outside any namespace.

/// <summary>
/// Lets a reliability test run its own code in a child process (for example under <c>ulimit -n</c>) without a project
/// of its own: the child is <c>dotnet EpollSharp.Tests.dll</c> with <c>DOTNET_STARTUP_HOOKS</c> naming this assembly,
/// so the runtime calls <see cref="Initialize"/> before the (empty) generated entry point. With
/// <c>EPOLLSHARP_RELIABILITY_CHILD</c> set, it runs that scenario and exits with its code; without it (a test host
/// never sets it) it does nothing.
/// </summary>
internal static class StartupHook
{
    public static void Initialize()
    {
        string? scenario = Environment.GetEnvironmentVariable(EpollSharp.Tests.Reliability.ChildProcess.ScenarioVariable);
        if (string.IsNullOrEmpty(scenario))
        {
            return;
        }

        Environment.Exit(EpollSharp.Tests.Reliability.ChildScenarios.Run(scenario));
    }
}
