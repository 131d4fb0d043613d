namespace EpollSharp.Tests.Util;

/// <summary>
/// A loop of the given backend running on its own thread for a test, with the exceptions that reach it collected
/// (assert <see cref="Errors"/> is empty to show that nothing was thrown on the loop thread). Disposing stops and
/// disposes the loop.
/// </summary>
public sealed class RunningLoop : IDisposable
{
    public RunningLoop(EventLoopBackend backend)
    {
        Loop = Backends.CreateLoop(backend, onError: Errors.Enqueue);
        Harness = new LoopHarness(Loop);
    }

    public ConcurrentQueue<Exception> Errors { get; } = new();

    public EventLoop Loop { get; }

    public LoopHarness Harness { get; }

    /// <summary>A plain blocking listening socket on 127.0.0.1, port 0: a peer that is not this library.</summary>
    public static Socket PlainListener(int backlog)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(backlog);
        return listener;
    }

    public void Dispose() => Harness.Dispose();
}
