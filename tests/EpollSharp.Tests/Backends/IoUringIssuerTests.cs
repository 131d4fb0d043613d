using System.Net;
using System.Net.Sockets;
using System.Reflection;
using EpollSharp.Backends;
using EpollSharp.Connections;
using EpollSharp.Tests.Connections;
using Xunit.Abstractions;

namespace EpollSharp.Tests.Backends;

/// <summary>
/// The io_uring ring bound to the loop's thread (<c>IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN</c>): only
/// that thread may submit and wait, so what other threads ask for (register, change, remove, wake) is queued for it and it
/// is woken; a loop run again on another thread gets a new ring; a loop disposed on another thread lets its sockets go.
/// Each test runs with the completion path off and on (when the kernel has it), on real sockets.
/// </summary>
public sealed class IoUringIssuerTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly ITestOutputHelper _output;

    public IoUringIssuerTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<bool> Paths => new() { false, true };

    private static EventLoop NewLoop(bool completions)
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        var loop = new EventLoop(new EventLoopOptions { Backend = EventLoopBackend.IoUring, IoUringCompletions = completions });
        if (completions && loop.CompletionIo is null)
        {
            loop.Dispose();
            Skip.If(true, "io_uring completions unavailable on this kernel");
        }

        return loop;
    }

    private static IoUringBackend BackendOf(EventLoop loop) =>
        (IoUringBackend)typeof(EventLoop).GetField("_backend", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(loop)!;

    /// <summary>A connected pair over loopback: (the server side, the client side).</summary>
    private static (Socket Server, Socket Client) Pair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000, NoDelay = true };
        client.Connect(listener.LocalEndPoint!);
        Socket server = listener.Accept();
        server.Blocking = false;
        return (server, client);
    }

    /// <summary>Waits (bounded) until the loop thread is inside the backend's wait, so that what follows happens while it waits.</summary>
    private static void WaitUntilWaiting(EventLoop loop)
    {
        IoUringBackend backend = BackendOf(loop);
        FieldInfo inWait = typeof(IoUringBackend).GetField("_inWait", BindingFlags.NonPublic | BindingFlags.Instance)!;
        LoopHarness.WaitUntil(() => (bool)inWait.GetValue(backend)!, "the loop waits on the ring");
        Thread.Sleep(20);
    }

    [SkippableFact]
    public void The_ring_is_bound_to_the_loop_thread_unless_switched_off()
    {
        Util.Backends.SkipUnlessAvailable(EventLoopBackend.IoUring);
        using var backend = new IoUringBackend(64);
        _output.WriteLine($"issuer-bound: {backend.IssuerBound}; switch on: {IoUringBackend.SingleIssuerSwitchedOn}; kernel {Environment.OSVersion.Version}");
        if (IoUringBackend.SingleIssuerSwitchedOn && Environment.OSVersion.Version >= new Version(6, 1))
        {
            Assert.True(backend.IssuerBound);
        }
        else if (!IoUringBackend.SingleIssuerSwitchedOn)
        {
            Assert.False(backend.IssuerBound);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Paths))]
    public void Register_change_remove_and_wake_from_another_thread_take_effect_while_the_loop_waits(bool completions)
    {
        using EventLoop loop = NewLoop(completions);
        Task run = loop.Start("issuer test loop");
        try
        {
            (Socket server, Socket client) = Pair();
            using Socket clientLease = client;
            var events = new System.Collections.Concurrent.BlockingCollection<Readiness>();

            // Register while the loop waits (this thread is not the ring's issuer).
            WaitUntilWaiting(loop);
            Registration registration = loop.Register(server, Interest.Readable, (r, readiness) =>
            {
                events.Add(readiness);
                if ((readiness & Readiness.Readable) != 0)
                {
                    byte[] buffer = new byte[64];
                    while (true)
                    {
                        try
                        {
                            if (r.Socket!.Receive(buffer) <= 0)
                            {
                                break;
                            }
                        }
                        catch (SocketException)
                        {
                            break;
                        }
                    }
                }
            }, mode: TriggerMode.Edge);
            client.Send(new byte[] { 1, 2, 3 });
            Assert.True(events.TryTake(out Readiness first, Patience), "no readable event after a cross-thread register");
            Assert.True((first & Readiness.Readable) != 0, first.ToString());

            // Change the interest while the loop waits: the socket is writable at once.
            WaitUntilWaiting(loop);
            registration.ChangeInterest(Interest.Writable);
            Assert.True(events.TryTake(out Readiness second, Patience), "no writable event after a cross-thread change");
            Assert.True((second & Readiness.Writable) != 0, second.ToString());
            registration.ChangeInterest(Interest.Readable);

            // Wake: work posted from this thread runs promptly while the loop waits with no timeout.
            WaitUntilWaiting(loop);
            var ran = new ManualResetEventSlim();
            loop.Post(ran.Set);
            Assert.True(ran.Wait(Patience), "posted work did not run: the wake-up was lost");

            // Remove while the loop waits, then close: the ring lets go of the socket, so the peer sees the FIN now.
            WaitUntilWaiting(loop);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            registration.Dispose();
            TimeSpan removeTook = sw.Elapsed;
            server.Dispose();
            client.ReceiveTimeout = 3000;
            int got = client.Receive(new byte[16]);
            _output.WriteLine($"issuer-bound {BackendOf(loop).IssuerBound}; remove took {removeTook.TotalMilliseconds:F1} ms; peer read {got} after close, {sw.Elapsed.TotalMilliseconds:F1} ms");
            Assert.Equal(0, got);
            Assert.True(removeTook < TimeSpan.FromSeconds(1.5), $"Remove took {removeTook}");
            Assert.Equal(0, loop.RegistrationCount);
        }
        finally
        {
            loop.Stop();
            Assert.True(run.Wait(Patience), "the loop did not stop");
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Paths))]
    public void A_loop_stopped_and_started_again_on_a_new_thread_keeps_echoing(bool completions)
    {
        EventLoop loop = NewLoop(completions);
        var handler = new EchoHandler();
        ConnectionListener listener = ConnectionListener.Listen(loop, new IPEndPoint(IPAddress.Loopback, 0), handler);
        try
        {
            Task first = loop.Start("first loop thread");
            using Socket a = Connections.EchoServer.ConnectTo(listener.LocalEndPoint);
            byte[] message = SocketTestExtensions.Pattern(3, 1000);
            a.Send(message);
            Assert.Equal(message, a.ReceiveExactly(message.Length));

            // Bytes that arrive while no thread runs the loop are there when it runs again.
            loop.Stop();
            Assert.True(first.Wait(Patience), "the loop did not stop");
            a.Send(message);

            Task second = loop.Start("second loop thread");
            Assert.Equal(message, a.ReceiveExactly(message.Length));
            for (int i = 0; i < 50; i++)
            {
                a.Send(message);
                Assert.Equal(message, a.ReceiveExactly(message.Length));
            }

            using Socket b = Connections.EchoServer.ConnectTo(listener.LocalEndPoint);
            b.Send(message);
            Assert.Equal(message, b.ReceiveExactly(message.Length));
            IoUringBackend backend = BackendOf(loop);
            _output.WriteLine($"issuer-bound {backend.IssuerBound}; ring moves {backend.RingMoves}; completions {loop.CompletionIo is not null}");
            if (backend.IssuerBound)
            {
                Assert.Equal(1, backend.RingMoves);
            }

            Assert.All(handler.Connections, c => Assert.Equal(completions, c.UsesCompletions));

            // Once more, and dispose from this thread after the stop: every connection ends, nothing hangs.
            loop.Stop();
            Assert.True(second.Wait(Patience), "the loop did not stop");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            listener.Dispose();
            loop.Dispose();
            _output.WriteLine($"dispose on another thread took {sw.Elapsed.TotalMilliseconds:F1} ms");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(3), "dispose took " + sw.Elapsed);
            a.ReceiveTimeout = 3000;
            b.ReceiveTimeout = 3000;
            Assert.Equal(0, ReceiveOrReset(a));
            Assert.Equal(0, ReceiveOrReset(b));
        }
        finally
        {
            listener.Dispose();
            loop.Dispose();
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Paths))]
    public void A_loop_that_never_ran_is_disposed_on_the_calling_thread_and_lets_its_sockets_go(bool completions)
    {
        EventLoop loop = NewLoop(completions);
        (Socket server, Socket client) = Pair();
        using Socket clientLease = client;
        loop.Register(server, Interest.Readable, (_, _) => { });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        loop.Dispose();
        server.Dispose();
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1.5), "dispose took " + sw.Elapsed);
        client.ReceiveTimeout = 3000;
        Assert.Equal(0, client.Receive(new byte[16]));
    }

    /// <summary>0 for an end of stream, also for a reset (the connection ended either way).</summary>
    private static int ReceiveOrReset(Socket socket)
    {
        try
        {
            return socket.Receive(new byte[16]);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
            return 0;
        }
    }
}
