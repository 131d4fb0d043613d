using System;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Text;
using System.Threading.Tasks;
using EpollSharp;

namespace EpollSharp.Consumer;

/// <summary>
/// An echo server on an EventLoop and a client, on 127.0.0.1: the client sends a few bytes, the loop echoes them, the
/// client checks them. What a user of the package would write first.
/// </summary>
public static class LoopbackEcho
{
    /// <summary>Echoes a message through an EventLoop; prints one line; returns 0 when the echo came back intact.</summary>
    public static int Run(string who)
    {
        using var loop = new EventLoop();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(16);
        listener.Blocking = false;
        Registration accepting = loop.Register(listener, Interest.Readable, OnAcceptable);
        Task stopped = loop.Start();

        byte[] message = Encoding.ASCII.GetBytes("echo through EpollSharp from " + who);
        var reply = new byte[message.Length];
        int got = 0;
        using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            client.ReceiveTimeout = 10_000;
            client.Connect(listener.LocalEndPoint!);
            client.Send(message);
            while (got < reply.Length)
            {
                int n = client.Receive(reply, got, reply.Length - got, SocketFlags.None);
                if (n == 0)
                {
                    break;
                }

                got += n;
            }

            client.Shutdown(SocketShutdown.Send);
            client.Receive(new byte[1]);                // 0: the server closed after our end of stream
        }

        loop.Stop();
        bool stoppedInTime = stopped.Wait(TimeSpan.FromSeconds(10));
        accepting.Dispose();

        Assembly library = typeof(EventLoop).Assembly;
        string version = library.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        string builtFor = library.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName ?? "?";
        bool ok = stoppedInTime && got == message.Length && Encoding.ASCII.GetString(reply) == Encoding.ASCII.GetString(message);
        Console.WriteLine(
            $"{who}: {(ok ? "ok" : "FAILED")}, echoed {got} of {message.Length} bytes; EpollSharp {version} ({builtFor}), " +
            $"backend {loop.Backend}, on {RuntimeInformation.FrameworkDescription}");
        return ok ? 0 : 1;
    }

    private static void OnAcceptable(Registration registration, Readiness readiness)
    {
        Socket connection;
        try
        {
            connection = registration.Socket!.Accept();
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
        {
            return;
        }

        connection.Blocking = false;
        registration.Loop.Register(connection, Interest.Readable, OnReadable, new byte[4096]);
    }

    private static void OnReadable(Registration registration, Readiness readiness)
    {
        Socket connection = registration.Socket!;
        byte[] buffer = (byte[])registration.State!;
        int n = connection.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError error);
        if (error == SocketError.WouldBlock)
        {
            return;
        }

        if (error != SocketError.Success || n == 0)
        {
            registration.Dispose();
            connection.Dispose();
            return;
        }

        connection.Send(buffer, 0, n, SocketFlags.None, out _);
    }
}
