using System;
using System.Net.Sockets;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>Concepts: edge-triggered callbacks drain; one-shot callbacks re-arm.</summary>
internal static class TriggerModes
{
    private const int Total = 256 * 1024;

    public static void RunEdge()
    {
        (Socket server, Socket client) = Loopback.Pair();
        using (client)
        using (server)
        {
            using var loop = new EventLoop();
            var session = new Counter();
            #region edge-register
            Registration registration = loop.Register(server, Interest.Readable, OnReadableEdge, session, TriggerMode.Edge);
            #endregion
            Task stopped = loop.Start();
            client.Send(new byte[Total]);
            Program.Check(session.Done.Task.Wait(TimeSpan.FromSeconds(10)), "every byte arrived");
            loop.Stop();
            stopped.Wait();
            registration.Dispose();
            Console.WriteLine($"edge-triggered: {session.Received} bytes in {session.Calls} callbacks");
        }
    }

    #region edge-drain
    // Edge-triggered: told once when data arrives, so read until the kernel says "would block".
    // Stopping early would leave data that no further callback announces.
    private static void OnReadableEdge(Registration registration, Readiness readiness)
    {
        var session = (Counter)registration.State!;
        session.Calls++;
        while (true)
        {
            int n = registration.Socket!.Receive(session.Buffer, 0, session.Buffer.Length, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock)
            {
                return;                                  // drained: the next edge brings the next callback
            }

            if (error != SocketError.Success || n == 0)
            {
                registration.Dispose();                  // end of stream or reset
                return;
            }

            session.Add(n);
        }
    }
    #endregion

    public static void RunOneShot()
    {
        (Socket server, Socket client) = Loopback.Pair();
        using (client)
        using (server)
        {
            using var loop = new EventLoop();
            var session = new Counter();
            Registration registration = loop.Register(server, Interest.Readable, OnReadableOneShot, session, TriggerMode.OneShot);
            Task stopped = loop.Start();
            client.Send(new byte[Total]);
            Program.Check(session.Done.Task.Wait(TimeSpan.FromSeconds(10)), "every byte arrived");
            loop.Stop();
            stopped.Wait();
            registration.Dispose();
            Console.WriteLine($"one-shot: {session.Received} bytes in {session.Calls} callbacks");
        }
    }

    #region one-shot
    // One-shot: after each callback the registration is disarmed until Rearm. Reading one buffer and
    // re-arming is enough: if data is left, the re-armed registration is told again at once.
    private static void OnReadableOneShot(Registration registration, Readiness readiness)
    {
        var session = (Counter)registration.State!;
        session.Calls++;
        int n = registration.Socket!.Receive(session.Buffer, 0, session.Buffer.Length, SocketFlags.None, out SocketError error);
        if (error == SocketError.Success && n > 0)
        {
            session.Add(n);
        }
        else if (error != SocketError.WouldBlock)
        {
            registration.Dispose();
            return;
        }

        registration.Rearm();                            // ask for the next event
    }
    #endregion

    private sealed class Counter
    {
        public byte[] Buffer { get; } = new byte[16 * 1024];

        public int Received { get; private set; }

        public int Calls { get; set; }

        public TaskCompletionSource<bool> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Add(int n)
        {
            Received += n;
            if (Received >= Total)
            {
                Done.TrySetResult(true);
            }
        }
    }
}
