#if NET5_0_OR_GREATER
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace EpollSharp.Connections;

/// <summary>What a TLS handshake of a <see cref="PipeConnection"/> negotiated (<see cref="PipeConnection.Tls"/>), read from its <see cref="SslStream"/> when the handshake completed.</summary>
public sealed class TlsConnectionInfo
{
    internal TlsConnectionInfo(SslStream stream)
    {
        SslProtocol = stream.SslProtocol;
        NegotiatedApplicationProtocol = stream.NegotiatedApplicationProtocol;
        NegotiatedCipherSuite = stream.NegotiatedCipherSuite;
        RemoteCertificate = stream.RemoteCertificate;
        TargetHostName = stream.TargetHostName;
    }

    /// <summary>The protocol version: <see cref="SslProtocols.Tls12"/> or <see cref="SslProtocols.Tls13"/> (or an older one, if the options allowed it).</summary>
    public SslProtocols SslProtocol { get; }

    /// <summary>The protocol ALPN selected (such as <see cref="SslApplicationProtocol.Http2"/>); <c>default</c> when none was.</summary>
    public SslApplicationProtocol NegotiatedApplicationProtocol { get; }

    /// <summary>The cipher suite.</summary>
    public TlsCipherSuite NegotiatedCipherSuite { get; }

    /// <summary>
    /// The peer's certificate: on a server, the client's (when it sent one); on a client, the server's. Owned by the
    /// connection's <see cref="SslStream"/>, which is disposed once the connection has closed: read it while it is open.
    /// </summary>
    public X509Certificate? RemoteCertificate { get; }

    /// <summary>On a server, the name the client asked for (SNI), empty when it sent none; on a client, the target host.</summary>
    public string TargetHostName { get; }
}
#endif
