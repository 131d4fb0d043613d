using System.Net.Sockets;

namespace EpollSharp.Connections;

/// <summary>
/// A connection's non-blocking system calls: one send or one receive on its socket, errors as <see cref="SocketError"/>
/// values, never an exception for a peer's error. The way differs by target, so each target has its own file, with the
/// same members: <c>SocketTransfer.NetCoreApp.cs</c> (net8.0 and later: <c>recv</c>/<c>send</c> straight on the descriptor
/// through <c>SocketIo</c> on Linux, <see cref="Socket"/>'s span overloads elsewhere) and
/// <c>SocketTransfer.NetStandard.cs</c> (netstandard2.0: <see cref="Socket"/>'s array overloads). No <c>#if</c> runs through
/// the connection's own code. (Each file declares its own fields: the fields of a partial struct are all in one part.)
/// </summary>
internal readonly partial struct SocketTransfer
{
}
