using System;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>
/// Serves each connection through an <see cref="System.IO.Pipelines.IDuplexPipe"/> and an <c>async</c> application, in the
/// manner of Kestrel's connection handlers: for every connection it makes a <see cref="PipeConnection"/> and runs
/// <c>application(pipeConnection)</c>. A <see cref="ConnectionHandler"/> like any other, so it goes wherever one does:
/// <see cref="ConnectionListener.Listen"/>, <see cref="EventLoopGroup.Listen"/>, <see cref="Connection.Connect"/>.
/// </summary>
/// <remarks>
/// <para>What the loop does for the application: it copies what the socket receives into the input pipe and stops reading
/// when the application falls <see cref="PipeConnectionOptions.InputPauseThreshold"/> behind; it sends what the application
/// flushes to the output pipe, and while the socket is backed up lets the output fill to
/// <see cref="PipeConnectionOptions.OutputPauseThreshold"/>, where the application's <c>FlushAsync</c> waits.</para>
/// <para>Ending: the application's task completing (or <see cref="PipeConnection.Transport"/>'s output completing) closes
/// the connection gracefully (pending output sent, then FIN); completing the output with an exception, or
/// <see cref="PipeConnection.Abort"/>, resets it; a task that faults resets it as well
/// (<see cref="ConnectionCloseReason.HandlerFault"/>) and its exception goes to the loop, as a handler callback's would.
/// See <c>docs/connections.md</c>, "Pipes", for every rule and how it compares with Kestrel's.</para>
/// <para>TLS (net8.0 and later): with <c>PipeConnectionOptions.TlsServer</c> (accepted connections) or <c>TlsClient</c>
/// (dialed ones) the handler runs the handshake first and starts the application only once it succeeded, with a
/// <see cref="PipeConnection.Transport"/> that carries the decrypted bytes; a handshake that fails or times out resets the
/// connection without calling the application. See <c>docs/connections.md</c>, "Streams and TLS".</para>
/// <para>The handler keeps each connection's <see cref="PipeConnection"/> in <see cref="Connection.UserState"/>: leave that
/// property alone (a <c>userState</c> given to <see cref="Connection.Connect"/> is replaced).</para>
/// </remarks>
public sealed class PipeConnectionHandler : ConnectionHandler
{
    private readonly Func<PipeConnection, Task>? _application;
    private readonly PipeConnectionOptions _options;

    /// <summary>Creates a handler that runs <paramref name="application"/> for each connection.</summary>
    /// <param name="application">
    /// The application: called once per connection (on the thread pool, or on the loop thread with
    /// <see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>); the connection lives until its task completes, or
    /// until the connection ends first.
    /// </param>
    /// <param name="options">The pipes' settings; null for the defaults. Read once, here.</param>
    /// <exception cref="ArgumentNullException"><paramref name="application"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A resume threshold of <paramref name="options"/> is above its pause threshold.</exception>
    /// <exception cref="ArgumentException">The <c>TlsServer</c> options of <paramref name="options"/> have no server certificate.</exception>
    public PipeConnectionHandler(Func<PipeConnection, Task> application, PipeConnectionOptions? options = null)
        : this(options)
    {
        _application = application ?? throw new ArgumentNullException(nameof(application));
    }

    /// <summary>For <see cref="PipeConnection.ConnectAsync"/>: no application; the caller drives the connection.</summary>
    internal PipeConnectionHandler(PipeConnectionOptions? options)
    {
        PipeConnectionOptions copy = (options ?? new PipeConnectionOptions()).Clone();
        copy.Validate();
        _options = copy;
    }

    /// <summary>Makes the connection's <see cref="PipeConnection"/> and starts the application.</summary>
    /// <param name="connection">The new connection.</param>
    public override void OnConnected(Connection connection)
    {
        var pipeConnection = new PipeConnection(connection, _options);
        connection.UserState = pipeConnection;
        pipeConnection.Start(_application);
    }

    /// <summary>Copies <paramref name="data"/> into the input pipe; pauses receiving when the pipe is full.</summary>
    /// <param name="connection">The connection.</param>
    /// <param name="data">The bytes received.</param>
    public override void OnReceived(Connection connection, ReadOnlySpan<byte> data) => Of(connection).OnReceived(data);

    /// <summary>With continuations on the loop, the input reader lends its memory for the next receive (no copy afterwards).</summary>
    internal override ArraySegment<byte> GetReceiveBuffer(Connection connection, int size) => Of(connection).GetReceiveBuffer(size);

    /// <summary>The peer's end of stream: completes the input pipe (the application reads what came before, then <c>IsCompleted</c>). Does not shut down the output.</summary>
    /// <param name="connection">The connection.</param>
    public override void OnReadClosed(Connection connection) => Of(connection).OnReadClosed();

    /// <summary>The connection's send backlog is full: the output pipe is not read until it drains. Receiving goes on.</summary>
    /// <param name="connection">The connection.</param>
    public override void OnWritePaused(Connection connection)
    {
        // The output pump checks Connection.IsWritePaused after each write; nothing to do here (and, unlike the default,
        // receiving is not paused: the input has its own backpressure).
    }

    /// <summary>The send backlog drained: the output pipe is read again.</summary>
    /// <param name="connection">The connection.</param>
    public override void OnWriteResumed(Connection connection) => Of(connection).OnWriteResumed();

    /// <summary>The listener's graceful shutdown: fires <see cref="PipeConnection.ConnectionClosedRequested"/>; the application is expected to finish, which closes the connection.</summary>
    /// <param name="connection">The connection.</param>
    public override void OnShutdownRequested(Connection connection) => Of(connection).OnShutdownRequested();

    /// <summary>Completes both pipes (with an <see cref="System.IO.IOException"/> unless the connection ended in order) and fires <see cref="PipeConnection.ConnectionClosed"/>.</summary>
    /// <param name="connection">The connection.</param>
    public override void OnClosed(Connection connection) => Of(connection).OnClosed();

    private static PipeConnection Of(Connection connection) =>
        connection.UserState as PipeConnection
        ?? throw new InvalidOperationException("The connection's UserState is not its PipeConnection: a PipeConnectionHandler keeps it there, and it must not be changed.");
}
