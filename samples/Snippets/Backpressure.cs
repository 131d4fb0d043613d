using System;
using System.Net.Sockets;
using System.Threading.Tasks;
using EpollSharp;

namespace Snippets;

/// <summary>
/// Backpressure on the loop: a server streams 32 MiB to a client that starts reading late. The server makes
/// the next chunk only when the kernel has taken the previous one, and asks for Writable only while a chunk
/// waits; its memory stays one chunk however slow the reader is.
/// </summary>
internal static class Backpressure
{
    private const long StreamLength = 32 * 1024 * 1024;

    public static void Run()
    {
        (Socket server, Socket client) = Loopback.Pair();
        using (client)
        using (server)
        {
            using var loop = new EventLoop();
            var stream = new Outgoing { Remaining = StreamLength };
            Registration registration = loop.Register(server, Interest.None, OnReady, stream);
            Task stopped = loop.Start();
            loop.Post(() => Pump(registration));                   // start producing, on the loop thread

            // A slow reader: it starts late, then reads everything until the server's end of stream.
            Task.Delay(100).Wait();
            long received = 0;
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = client.Receive(buffer)) > 0)
            {
                for (int i = 0; i < n; i++)
                {
                    Program.Check(buffer[i] == (byte)(received + i), "bytes in order");
                }

                received += n;
            }

            loop.Stop();
            stopped.Wait();
            registration.Dispose();
            Console.WriteLine($"received {received} bytes; the server waited for Writable {stream.Waits} times, holding at most {Outgoing.ChunkSize} bytes");
            Program.Check(received == StreamLength, "the whole stream");
            Program.Check(stream.Waits > 0, "the slow reader held the server back");
        }
    }

    #region outgoing
    // What a connection keeps of its output: the part of the current chunk that the kernel did not take yet.
    private sealed class Outgoing
    {
        public const int ChunkSize = 16 * 1024;

        public readonly byte[] Chunk = new byte[ChunkSize];
        public int Start;                                         // first byte not sent yet
        public int Count;                                         // bytes not sent yet
        public long Produced;
        public long Remaining;
        public int Waits;
    }
    #endregion

    #region on-ready
    private static void OnReady(Registration registration, Readiness readiness)
    {
        if ((readiness & (Readiness.Error | Readiness.Closed)) != 0)
        {
            Socket socket = registration.Socket!;
            registration.Dispose();                               // the peer is gone: the registration, then the socket
            socket.Dispose();
            return;
        }

        if ((readiness & Readiness.Writable) != 0)
        {
            Pump(registration);                                   // room again: send the rest, then produce more
        }
    }
    #endregion

    #region pump
    // Sends what is pending; produces the next chunk only when the kernel took the whole previous one.
    private static void Pump(Registration registration)
    {
        var stream = (Outgoing)registration.State!;
        Socket socket = registration.Socket!;
        while (true)
        {
            while (stream.Count > 0)
            {
                int sent = socket.Send(stream.Chunk, stream.Start, stream.Count, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock)
                {
                    // The send buffer is full: wait for Writable. Only now, and only until it drains: a
                    // level-triggered Writable interest on a socket with room fires on every iteration.
                    if (registration.Interest != Interest.Writable)
                    {
                        registration.ChangeInterest(Interest.Writable);
                    }

                    stream.Waits++;
                    return;
                }

                if (error != SocketError.Success)
                {
                    registration.Dispose();
                    socket.Dispose();
                    return;
                }

                stream.Start += sent;
                stream.Count -= sent;
            }

            if (stream.Remaining == 0)
            {
                registration.ChangeInterest(Interest.None);           // all sent: nothing more to be told about
                socket.Shutdown(SocketShutdown.Send);                 // the reader sees end of stream
                return;
            }

            Produce(stream);
        }
    }
    #endregion

    private static void Produce(Outgoing stream)
    {
        int length = (int)Math.Min(Outgoing.ChunkSize, stream.Remaining);
        for (int i = 0; i < length; i++)
        {
            stream.Chunk[i] = (byte)(stream.Produced + i);
        }

        stream.Start = 0;
        stream.Count = length;
        stream.Produced += length;
        stream.Remaining -= length;
    }
}
