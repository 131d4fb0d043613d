// Runs every documentation snippet on 127.0.0.1 and exits 0 when all of them worked.
//
//   dotnet run --project samples/Snippets            # all
//   dotnet run --project samples/Snippets -- echo    # the ones whose name contains "echo"
using System;
using System.Diagnostics;
using System.Threading.Tasks;

namespace Snippets;

internal static class Program
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private static int Main(string[] args)
    {
        (string Name, Action Run)[] snippets =
        [
            ("first-loop", FirstLoop.Run),
            ("echo", EchoLoop.Run),
            ("edge-triggered", TriggerModes.RunEdge),
            ("one-shot", TriggerModes.RunOneShot),
            ("backend", Backends.Run),
            ("exceptions", Exceptions.Run),
            ("cpu-bound", CpuBound.Run),
            ("cpu-bound-await", CpuBound.RunAwait),
            ("callback-budget", CpuBound.RunWatchdog),
            ("logging", Operating.RunLogging),
            ("meter-listener", Operating.RunMeterListener),
            ("backpressure", Backpressure.Run),
            ("graceful-shutdown", Shutdown.Run),
            ("dial-callback", DialingOut.RunCallback),
            ("dial-async", DialingOut.RunAsync),
            ("dial-timeout", DialingOut.RunTimeout),
            ("dial-dns", DialingOut.RunDns),
            ("unix-socket", DialingOut.RunUnix),
            ("ipv6-dual-mode", DialingOut.RunIpv6),
            ("address-in-use", DialingOut.RunAddressInUse),
            ("socket-options", DialingOut.RunOptions),
            ("listen-on-socket", DialingOut.RunOwnSocket),
            ("pipe-echo", PipesStreamsTls.RunPipeEcho),
            ("pipe-input-backpressure", PipesStreamsTls.RunInputBackpressure),
            ("pipe-output-backpressure", PipesStreamsTls.RunOutputBackpressure),
            ("pipe-shutdown", PipesStreamsTls.RunShutdown),
            ("pipe-on-loop", PipesStreamsTls.RunOnLoop),
            ("pipe-stream", PipesStreamsTls.RunStream),
            ("tls", PipesStreamsTls.RunTls),
            ("tls-failures", PipesStreamsTls.RunTlsFailures),
            ("tls-by-hand", PipesStreamsTls.RunTlsByHand),
            ("kestrel", Kestrel.Run),
        ];

        int passed = 0, failed = 0;
        foreach ((string name, Action run) in snippets)
        {
            if (args.Length > 0 && !name.Contains(args[0], StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            Console.WriteLine($"--- {name}");
            var watch = Stopwatch.StartNew();
            Task task = Task.Run(run);
            try
            {
                if (!task.Wait(Limit))
                {
                    // A hung snippet cannot be cancelled; report it and end the process.
                    Console.WriteLine($"FAILED {name}: still running after {Limit.TotalSeconds} s");
                    Console.WriteLine($"snippets: {passed} passed, {failed + 1} failed");
                    return 1;
                }

                Console.WriteLine($"ok {name} ({watch.ElapsedMilliseconds} ms)");
                passed++;
            }
            catch (AggregateException e)
            {
                Console.WriteLine($"FAILED {name}: {e.InnerException}");
                failed++;
            }
        }

        Console.WriteLine($"snippets: {passed} passed, {failed} failed");
        return failed == 0 && passed > 0 ? 0 : 1;
    }

    /// <summary>Throws when a snippet's result is not what it should be.</summary>
    internal static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException("check failed: " + what);
        }
    }
}
