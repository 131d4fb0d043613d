// EpollWait: the low-level layer of EpollSharp on its own, step by step.
//
// 1. create an epoll instance;
// 2. listen on 127.0.0.1 (a free port) and connect a client to it;
// 3. register the listener for EPOLLIN and wait: a pending connection makes it readable;
// 4. accept, register the accepted socket for EPOLLIN | EPOLLRDHUP;
// 5. send from the client, wait, and read what arrived.
//
// The 64-bit user data given to Add comes back with every event; here it is a small token that says
// which socket is ready (a real program would use a slot and a generation, never the fd number alone).
using System;
using System.Net;
using System.Net.Sockets;
using System.Text;
using EpollSharp.Native;

const ulong ListenerToken = 1;
const ulong ConnectionToken = 2;

if (!EpollHandle.IsSupported)
{
    Console.Error.WriteLine("epoll needs Linux.");
    return 2;
}

using var epoll = EpollHandle.Create();
using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
listener.Listen(16);
Console.WriteLine($"epoll instance: fd {epoll.FileDescriptor}; listening on {listener.LocalEndPoint}");

epoll.Add(listener.SafeHandle, EpollEvents.In, ListenerToken);
Console.WriteLine($"registered listener fd {FdOf(listener)} for {EpollEvents.In}");

using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
client.Connect(listener.LocalEndPoint!);
Console.WriteLine($"client connected from {client.LocalEndPoint}");

var events = new EpollEvent[8];
EpollEvent ready = WaitFor(epoll, events, ListenerToken);
Console.WriteLine($"fd {FdOf(listener)} ready: {ready.Events}");

using var connection = listener.Accept();
epoll.Add(connection.SafeHandle, EpollEvents.In | EpollEvents.RdHup, ConnectionToken);
Console.WriteLine($"accepted fd {FdOf(connection)} from {connection.RemoteEndPoint}; registered for {EpollEvents.In | EpollEvents.RdHup}");

byte[] message = Encoding.UTF8.GetBytes("hello, epoll");
client.Send(message);
Console.WriteLine($"client sent {message.Length} bytes");

ready = WaitFor(epoll, events, ConnectionToken);
Console.WriteLine($"fd {FdOf(connection)} ready: {ready.Events}");

var buffer = new byte[1024];
int received = connection.Receive(buffer);
Console.WriteLine($"received {received} bytes: \"{Encoding.UTF8.GetString(buffer, 0, received)}\"");

// Delete before close: epoll tracks the open file description, not the number.
epoll.Delete(connection.SafeHandle);
epoll.Delete(listener.SafeHandle);
Console.WriteLine("done");
return 0;

// Waits until an event with this token arrives (other events, spurious or not, are printed and skipped).
static EpollEvent WaitFor(EpollHandle epoll, EpollEvent[] events, ulong token)
{
    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
    while (DateTime.UtcNow < deadline)
    {
        int count = epoll.Wait(events, TimeSpan.FromSeconds(1));
        for (int i = 0; i < count; i++)
        {
            if (events[i].Data == token)
            {
                return events[i];
            }

            Console.WriteLine($"(other event: {events[i]})");
        }
    }

    throw new TimeoutException($"no event for token {token} within 10 s");
}

static int FdOf(Socket socket) => (int)socket.SafeHandle.DangerousGetHandle();
