using System;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>Getting started: an echo server on the event loop, and a client that talks to it.</summary>
internal static class EchoLoop
{
    public static void Run()
    {
        #region echo-listen
        using var loop = new EventLoop();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));   // port 0: any free port
        listener.Listen(128);
        listener.Blocking = false;                              // the loop refuses blocking sockets
        using Registration accepting = loop.Register(listener, Interest.Readable, OnAcceptable);
        Task stopped = loop.Start();
        #endregion

        #region echo-client
        using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            client.Connect(listener.LocalEndPoint!);            // an ordinary blocking client
            byte[] message = Encoding.ASCII.GetBytes("hello, loop");
            client.Send(message);

            var reply = new byte[message.Length];
            for (int got = 0; got < reply.Length;)
            {
                int n = client.Receive(reply, got, reply.Length - got, SocketFlags.None);
                if (n == 0)
                {
                    throw new InvalidOperationException("the server closed early");
                }

                got += n;
            }

            Console.WriteLine($"echoed: {Encoding.ASCII.GetString(reply)}");
            client.Shutdown(SocketShutdown.Send);               // the server sees end of stream and closes
            int end = client.Receive(reply);                    // 0: the server closed its side too
            Program.Check(end == 0, "the server closed after the client's end of stream");
        }

        loop.Stop();
        stopped.Wait();
        #endregion
        Program.Check(loop.RegistrationCount == 1, "only the listener is still registered");
    }

    #region echo-accept
    // Called on the loop thread when the listener has a connection waiting. Level-triggered: while more
    // connections wait, the loop calls again, so one accept per call is enough.
    private static void OnAcceptable(Registration registration, Readiness readiness)
    {
        Socket connection;
        try
        {
            connection = registration.Socket!.Accept();
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
        {
            return;                                             // readiness is a hint: nobody was waiting after all
        }

        connection.Blocking = false;
        registration.Loop.Register(connection, Interest.Readable, OnReadable, state: new byte[4096]);
    }
    #endregion

    #region echo-read
    private static void OnReadable(Registration registration, Readiness readiness)
    {
        Socket connection = registration.Socket!;
        byte[] buffer = (byte[])registration.State!;
        int n = connection.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError error);
        if (error == SocketError.WouldBlock)
        {
            return;                                             // a spurious wake-up: nothing to read
        }

        if (error != SocketError.Success || n == 0)             // reset, or end of stream
        {
            registration.Dispose();                             // the registration first, then the socket
            connection.Dispose();
            return;
        }

        // A non-blocking send may take only part of the data when the peer reads slowly; a real server
        // keeps the rest and waits for Writable (see "Graceful shutdown and backpressure").
        connection.Send(buffer, 0, n, SocketFlags.None, out _);
    }
    #endregion
}
