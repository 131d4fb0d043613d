#if NET5_0_OR_GREATER
namespace EpollSharp.Connections;

// TLS settings (net8.0 and later: netstandard2.0 has no SslServerAuthenticationOptions; there, wrap PipeConnection.AsStream
// in an SslStream yourself).
public sealed partial class PipeConnectionOptions
{
    /// <summary>
    /// TLS for the connections a listener accepts: with it, the <see cref="PipeConnectionHandler"/> runs the handshake
    /// before it calls the application, and the application's <see cref="PipeConnection.Transport"/> carries the decrypted
    /// bytes (<see cref="PipeConnection.Tls"/> says what was negotiated). Null (default): no TLS. Not in the
    /// netstandard2.0 build.
    /// </summary>
    public TlsServerOptions? TlsServer { get; set; }

    /// <summary>
    /// TLS for the connections this side dials (<see cref="PipeConnection.ConnectAsync"/>, or <see cref="Connection.Connect"/>
    /// with a <see cref="PipeConnectionHandler"/>): the handshake runs before the task completes (or the application is
    /// called). Null (default): no TLS. Not in the netstandard2.0 build.
    /// </summary>
    public TlsClientOptions? TlsClient { get; set; }

    partial void ValidateTls()
    {
        TlsServer?.Validate();
        TlsClient?.Validate();
    }
}
#endif
