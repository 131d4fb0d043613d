using System.Net.Sockets;

namespace EpollSharp.Connections;

/// <summary>A listening socket passed to this process by socket activation (see <see cref="SocketActivation.TakeSockets"/>).</summary>
public sealed class ActivatedSocket
{
    internal ActivatedSocket(Socket socket, string? name, int descriptor)
    {
        Socket = socket;
        Name = name;
        Descriptor = descriptor;
    }

    /// <summary>The socket; the caller owns it (a listener given it closes it when it stops).</summary>
    public Socket Socket { get; }

    /// <summary>The socket's name from <c>LISTEN_FDNAMES</c> (systemd's <c>FileDescriptorName=</c>), or <see langword="null"/> when none was given.</summary>
    public string? Name { get; }

    /// <summary>The descriptor number it was passed as (3 and up).</summary>
    public int Descriptor { get; }
}
