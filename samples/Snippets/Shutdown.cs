using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>
/// Graceful shutdown on the loop: stop accepting, tell every peer that no more data comes, wait for the peers
/// to close (with a deadline), then stop the loop. Three clients: two close when they see the end of stream,
/// one does not, and the deadline closes it.
/// </summary>
internal static class Shutdown
{
    public static void Run()
    {
        using var loop = new EventLoop();
        var server = new EchoServer(loop);
        Task stopped = loop.Start();

        var clients = new List<Socket>();
        for (int i = 0; i < 3; i++)
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            client.Connect(server.EndPoint);
            client.Send([(byte)i]);
            var echo = new byte[1];
            Program.Check(client.Receive(echo) == 1 && echo[0] == i, "echo before the shutdown");
            clients.Add(client);
        }

        // Two polite clients: they close when they read the server's end of stream.
        Task[] polite = clients.Take(2).Select(c => Task.Run(() =>
        {
            while (c.Receive(new byte[16]) > 0)
            {
            }

            c.Dispose();
        })).ToArray();

        var watch = Stopwatch.StartNew();
        #region begin-shutdown
        server.BeginShutdown(drainTimeout: TimeSpan.FromMilliseconds(300));   // from any thread
        stopped.Wait();                                                       // the loop stopped once drained
        #endregion
        Console.WriteLine($"drained and stopped in {watch.ElapsedMilliseconds} ms (one client had to be closed at the deadline)");
        Program.Check(Task.WaitAll(polite, TimeSpan.FromSeconds(5)), "the polite clients saw the end of stream");
        Program.Check(watch.ElapsedMilliseconds >= 250, "the deadline was waited for");
        Program.Check(server.OpenConnections == 0, "every connection closed");

        Socket stubborn = clients[2];
        Program.Check(stubborn.Receive(new byte[16]) == 0, "the stubborn client was closed at the deadline");
        stubborn.Dispose();

        using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            late.Connect(server.EndPoint);
            Program.Check(false, "a connection after the shutdown is refused");
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            Console.WriteLine("a new connection after the shutdown was refused");
        }
    }

    private sealed class EchoServer
    {
        private readonly EventLoop _loop;
        private readonly Socket _listener;
        private readonly Registration _accepting;
        private readonly HashSet<Registration> _connections = [];
        private readonly byte[] _buffer = new byte[4096];
        private bool _draining;
        private LoopTimer? _deadline;

        public EchoServer(EventLoop loop)
        {
            _loop = loop;
            _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(16);
            _listener.Blocking = false;
            EndPoint = (IPEndPoint)_listener.LocalEndPoint!;
            _accepting = loop.Register(_listener, Interest.Readable, OnAcceptable);
        }

        public IPEndPoint EndPoint { get; }

        public int OpenConnections => _connections.Count;

        #region shutdown
        // Safe from any thread (a signal handler, a host's StopAsync): the work is posted to the loop thread,
        // the only thread that touches the sockets.
        public void BeginShutdown(TimeSpan drainTimeout) => _loop.Post(() =>
        {
            _draining = true;
            _accepting.Dispose();                                  // 1. stop accepting: the registration, then the socket
            _listener.Dispose();
            foreach (Registration connection in _connections)
            {
                // 2. no more data from us: the peer reads the end of stream. (A server that buffers output flushes
                //    it first; the kernel sends what it already holds before the FIN.)
                connection.Socket!.Shutdown(SocketShutdown.Send);
            }

            _deadline = _loop.Schedule(drainTimeout, _ => CloseAll()); // 3. a deadline for peers that do not close
            StopWhenDrained();
        });

        private void StopWhenDrained()
        {
            if (_draining && _connections.Count == 0)
            {
                _deadline?.Cancel();
                _loop.Stop();                                       // 4. Run returns; Start's task completes
            }
        }

        private void CloseAll()
        {
            foreach (Registration connection in _connections.ToArray())
            {
                Close(connection);
            }
        }
        #endregion

        private void OnAcceptable(Registration registration, Readiness readiness)
        {
            Socket connection;
            try
            {
                connection = _listener.Accept();
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
            {
                return;
            }

            connection.Blocking = false;
            _connections.Add(_loop.Register(connection, Interest.Readable, OnReadable));
        }

        private void OnReadable(Registration registration, Readiness readiness)
        {
            Socket connection = registration.Socket!;
            int n = connection.Receive(_buffer, 0, _buffer.Length, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock)
            {
                return;
            }

            if (error != SocketError.Success || n == 0)
            {
                Close(registration);                                // the peer closed (or reset)
                return;
            }

            if (!_draining)
            {
                connection.Send(_buffer, 0, n, SocketFlags.None, out _);
            }
        }

        private void Close(Registration registration)
        {
            Socket socket = registration.Socket!;
            _connections.Remove(registration);
            registration.Dispose();
            socket.Dispose();
            StopWhenDrained();
        }
    }
}
