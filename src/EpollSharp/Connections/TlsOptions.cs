#if NET5_0_OR_GREATER
using System;
using System.Net.Security;
using System.Threading;

namespace EpollSharp.Connections;

/// <summary>
/// What the TLS layer of a <see cref="PipeConnection"/> shares on both sides: the handshake's deadline and where a failed
/// handshake is reported. See <see cref="TlsServerOptions"/> and <see cref="TlsClientOptions"/>.
/// </summary>
public abstract class TlsOptions
{
    private TimeSpan _handshakeTimeout = TimeSpan.FromSeconds(10);

    private protected TlsOptions()
    {
    }

    /// <summary>
    /// How long the handshake may take, from the connection's start: a peer that has not finished it by then has its
    /// connection reset, and the failure is a <see cref="TimeoutException"/>. Default 10 seconds (Kestrel's);
    /// <see cref="Timeout.InfiniteTimeSpan"/> for none.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive (and not <see cref="Timeout.InfiniteTimeSpan"/>), or is beyond <see cref="int.MaxValue"/> milliseconds.</exception>
    public TimeSpan HandshakeTimeout
    {
        get => _handshakeTimeout;
        set
        {
            if (value != Timeout.InfiniteTimeSpan && (value <= TimeSpan.Zero || value.TotalMilliseconds > int.MaxValue))
            {
                throw new ArgumentOutOfRangeException(nameof(HandshakeTimeout), value, "HandshakeTimeout must be positive (at most int.MaxValue ms), or Timeout.InfiniteTimeSpan.");
            }

            _handshakeTimeout = value;
        }
    }

    /// <summary>
    /// Called when a handshake fails — the peer sent something that is not TLS, the certificates were refused, the
    /// protocols did not match, the <see cref="HandshakeTimeout"/> passed, or the connection ended first — after the
    /// connection was reset, with the <see cref="PipeConnection"/> (whose application was never started) and the
    /// exception: an <see cref="System.Security.Authentication.AuthenticationException"/>, an
    /// <see cref="System.IO.IOException"/>, or a <see cref="TimeoutException"/>. Runs where the application's
    /// continuations run; an exception it throws goes to the loop as a handler callback's would. Null (default): the
    /// failure is not reported (a dialed connection still fails its <see cref="PipeConnection.ConnectAsync"/> task).
    /// </summary>
    public Action<PipeConnection, Exception>? OnHandshakeFailed { get; set; }

    /// <summary>Runs the handshake on <paramref name="stream"/>.</summary>
    internal abstract System.Threading.Tasks.Task AuthenticateAsync(SslStream stream, CancellationToken cancellationToken);

    /// <summary>Throws when the options cannot be used.</summary>
    internal abstract void Validate();
}

/// <summary>
/// TLS for the connections a <see cref="PipeConnectionHandler"/> accepts (<see cref="PipeConnectionOptions.TlsServer"/>):
/// the handshake runs through an <see cref="SslStream"/> with <see cref="AuthenticationOptions"/> before the application
/// is called, and the application's <see cref="PipeConnection.Transport"/> then carries the decrypted bytes.
/// </summary>
public sealed class TlsServerOptions : TlsOptions
{
    /// <summary>Creates the options.</summary>
    /// <param name="authenticationOptions">The server's certificate (or selector), client certificate policy, protocols, ALPN protocols and the rest, as <see cref="SslStream.AuthenticateAsServerAsync(SslServerAuthenticationOptions, CancellationToken)"/> takes them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="authenticationOptions"/> is null.</exception>
    public TlsServerOptions(SslServerAuthenticationOptions authenticationOptions) =>
        AuthenticationOptions = authenticationOptions ?? throw new ArgumentNullException(nameof(authenticationOptions));

    /// <summary>
    /// The .NET options passed to each handshake, as they are (shared by every connection: do not change them while the
    /// handler serves).
    /// </summary>
    public SslServerAuthenticationOptions AuthenticationOptions { get; }

    internal override System.Threading.Tasks.Task AuthenticateAsync(SslStream stream, CancellationToken cancellationToken) =>
        stream.AuthenticateAsServerAsync(AuthenticationOptions, cancellationToken);

    internal override void Validate()
    {
        if (AuthenticationOptions.ServerCertificate is null && AuthenticationOptions.ServerCertificateContext is null && AuthenticationOptions.ServerCertificateSelectionCallback is null)
        {
            throw new ArgumentException("TlsServerOptions.AuthenticationOptions has no server certificate (ServerCertificate, ServerCertificateContext or ServerCertificateSelectionCallback).", "options");
        }
    }
}

/// <summary>
/// TLS for the connections a <see cref="PipeConnection.ConnectAsync"/> dials (<see cref="PipeConnectionOptions.TlsClient"/>):
/// the handshake runs through an <see cref="SslStream"/> with <see cref="AuthenticationOptions"/>, and the task completes
/// once it succeeded.
/// </summary>
public sealed class TlsClientOptions : TlsOptions
{
    /// <summary>Creates the options.</summary>
    /// <param name="authenticationOptions">The target host (for SNI and the certificate's name), the client certificates, protocols, ALPN protocols, validation callback and the rest, as <see cref="SslStream.AuthenticateAsClientAsync(SslClientAuthenticationOptions, CancellationToken)"/> takes them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="authenticationOptions"/> is null.</exception>
    public TlsClientOptions(SslClientAuthenticationOptions authenticationOptions) =>
        AuthenticationOptions = authenticationOptions ?? throw new ArgumentNullException(nameof(authenticationOptions));

    /// <summary>The .NET options passed to each handshake, as they are (do not change them while connections use them).</summary>
    public SslClientAuthenticationOptions AuthenticationOptions { get; }

    internal override System.Threading.Tasks.Task AuthenticateAsync(SslStream stream, CancellationToken cancellationToken) =>
        stream.AuthenticateAsClientAsync(AuthenticationOptions, cancellationToken);

    internal override void Validate()
    {
    }
}
#endif
