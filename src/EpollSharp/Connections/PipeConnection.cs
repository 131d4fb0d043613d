using System;
using System.IO;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;

namespace EpollSharp.Connections;

/// <summary>
/// A <see cref="Connections.Connection"/> seen as a pair of pipes (<see cref="Transport"/>), in the manner of Kestrel's
/// <c>ConnectionContext</c>: the loop fills <see cref="Transport"/>'s input from the socket and sends what the application
/// flushes to its output, with backpressure in both directions. Made by a <see cref="PipeConnectionHandler"/> for each
/// connection it serves, or by <see cref="ConnectAsync"/> for a connection the caller dials and drives.
/// </summary>
/// <remarks>
/// <para><b>Threads.</b> <see cref="Transport"/>, <see cref="Abort"/>, <see cref="DisposeAsync"/>, the tokens and the
/// properties may be used from any thread (each pipe end by one reader or one writer at a time, as for any pipe). The
/// underlying <see cref="Connection"/>'s methods must still be called on its loop thread.</para>
/// <para><b>Ending.</b> Completing <see cref="Transport"/>'s output closes the connection gracefully: what was flushed is
/// sent, then FIN; the input then completes too (data not yet read stays readable; nothing more is added). Completing the
/// output with an exception resets the connection. Completing the input only stops reading the socket. The peer's end of
/// stream completes the input; a reset or another error completes both pipes with an <see cref="IOException"/>.
/// <see cref="ConnectionClosed"/> fires when the connection has closed.</para>
/// </remarks>
public sealed partial class PipeConnection : IAsyncDisposable
{
    private static readonly Action<Task, object?> s_onApplicationCompleted = static (_, state) => ((PipeConnection)state!).OnApplicationCompleted();
    private static readonly Action<object?> s_applicationCompletedOnLoop = static state => ((PipeConnection)state!).ApplicationCompletedOnLoop();
    private static readonly Action<object?> s_abortOnLoop = static state => ((PipeConnection)state!).AbortOnLoop();
    private static readonly Action<object?> s_fireClosed = static state => ((PipeConnection)state!).FireClosed();
    private static readonly Action<object?> s_fireCloseRequested = static state => ((PipeConnection)state!).FireCloseRequested();
    private static readonly WaitCallback s_fireClosedOnPool = static state => ((PipeConnection)state!).FireClosed();
    private static readonly WaitCallback s_fireCloseRequestedOnPool = static state => ((PipeConnection)state!).FireCloseRequested();

    private readonly Pipe? _input;
    private readonly Pipe? _output;
    private readonly bool _continuationsOnLoop;
    private readonly PipeConnectionOptions _options;
    private readonly CancellationTokenSource _closed = new();
    private readonly CancellationTokenSource _closeRequested = new();
    private readonly TaskCompletionSource<bool> _closedTask = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _application;

    /// <summary>Set on the loop thread when the connection closed; read there.</summary>
    private bool _isClosed;

    /// <summary>What both pipes were completed with when the connection closed; null when it ended in order.</summary>
    private Exception? _closeError;

    internal PipeConnection(Connection connection, PipeConnectionOptions options)
    {
        Connection = connection;
        _options = options;
        _continuationsOnLoop = options.RunContinuationsOnLoop;
        // The options and schedulers are shared by this thread's connections with the same settings (PipeConnection.SharedOptions.cs).
        SharedPipeOptions shared = SharedOptionsFor(options, connection.Loop);
        if (_continuationsOnLoop)
        {
            // The application's input and output go between it and the connection without a pipe between
            // (PipeConnection.LoopInput.cs, PipeConnection.LoopOutput.cs).
            _loopInput = new LoopInputReader(this, options);
            _loopOutput = new LoopOutputWriter(this, options);
        }
        else
        {
            _input = new Pipe(shared.Input);
            _output = new Pipe(shared.Output);
        }

        Transport = new DuplexPipe(InputReader, OutputWriter);
        _onInputFlushed = OnInputFlushed;
        _onOutputReadable = OnOutputReadable;
    }

    /// <summary>
    /// The underlying connection: its counters and state (<see cref="Connection.BytesReceived"/>,
    /// <see cref="Connection.CloseReason"/>, ...) may be read anywhere, but its methods must be called on its loop thread
    /// (<c>Connection.Loop.Post</c>), and its <see cref="Connection.UserState"/> holds this object: leave it alone.
    /// </summary>
    public Connection Connection { get; }

    /// <summary>
    /// The application's ends of the two pipes: <see cref="IDuplexPipe.Input"/> yields what the peer sent;
    /// <see cref="IDuplexPipe.Output"/> takes what to send (sent once flushed).
    /// </summary>
    public IDuplexPipe Transport { get; private set; }

    /// <summary>
    /// A duplex <see cref="Stream"/> over <see cref="Transport"/>, for code that wants a stream: a read returns what the
    /// input holds (0 at the peer's end of stream), a write goes to the output and is flushed at once (waiting while the
    /// output is at its pause threshold), <c>Flush</c> does nothing more, and disposing the stream ends the connection
    /// gracefully as <see cref="DisposeAsync"/> does. Reads and writes take a cancellation token; a reset or another error
    /// makes them throw the pipes' <see cref="IOException"/>, and a write after the connection closed throws an
    /// <see cref="IOException"/> too. Over TLS the stream carries the decrypted bytes. Make one stream per connection, and
    /// do not use <see cref="Transport"/> beside it.
    /// </summary>
    /// <returns>A new stream over <see cref="Transport"/>.</returns>
    public Stream AsStream() => new DuplexPipeStream(Transport, readsCompleteOnLoop: _continuationsOnLoop);

    /// <summary>
    /// Fires when the connection has closed (in order, reset, or aborted) and both pipes are completed. Its callbacks run on
    /// the thread pool (on the loop thread with <see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>), never inside
    /// the loop's handling of the close.
    /// </summary>
    public CancellationToken ConnectionClosed => _closed.Token;

    /// <summary>
    /// Fires when the server asks the connection to finish: the listener's or group's graceful <c>ShutdownAsync</c>
    /// reached it (Kestrel's <c>IConnectionLifetimeNotificationFeature.ConnectionClosedRequested</c>), and at the latest
    /// when the connection closes. Finish the current exchange and return (or complete the output); connections still open
    /// at the shutdown's drain deadline are reset. An application waiting in <c>ReadAsync</c> can register
    /// <c>Transport.Input.CancelPendingRead</c> on it.
    /// </summary>
    public CancellationToken ConnectionClosedRequested => _closeRequested.Token;

    /// <summary>A number unique to the connection within the process (<see cref="Connection.Id"/>).</summary>
    public long Id => Connection.Id;

    /// <summary>This side's address (<see cref="Connection.LocalEndPoint"/>).</summary>
    public EndPoint? LocalEndPoint => Connection.LocalEndPoint;

    /// <summary>The peer's address (<see cref="Connection.RemoteEndPoint"/>).</summary>
    public EndPoint? RemoteEndPoint => Connection.RemoteEndPoint;

    /// <summary>
    /// Dials <paramref name="endPoint"/> from <paramref name="loop"/> and returns the connection as pipes, for the caller to
    /// drive: write to <see cref="Transport"/>'s output, read its input, and end with <see cref="DisposeAsync"/> (graceful)
    /// or <see cref="Abort"/>. The task completes once the connection is made, faults with a <see cref="ConnectException"/>,
    /// or is canceled, as <see cref="Connection.ConnectAsync"/>'s does. With <see cref="PipeConnectionOptions.RunContinuationsOnLoop"/>,
    /// code after an <c>await</c> on the pipes resumes on the loop thread, where it must never block.
    /// </summary>
    /// <param name="loop">The loop the connection will live on.</param>
    /// <param name="endPoint">An <see cref="IPEndPoint"/>, a <see cref="DnsEndPoint"/>, or a <c>UnixDomainSocketEndPoint</c>.</param>
    /// <param name="options">The pipes' settings; null for the defaults.</param>
    /// <param name="connectOptions">The connect timeout and the connection's settings; null for the defaults.</param>
    /// <param name="cancellationToken">Cancels the attempt until the connection is made; no effect after.</param>
    /// <returns>The connection.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="loop"/> or <paramref name="endPoint"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="endPoint"/> cannot be dialed (see <see cref="Connection.ConnectAsync"/>), or the connection options are inconsistent.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A resume threshold of <paramref name="options"/> is above its pause threshold.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="loop"/> was disposed.</exception>
    public static Task<PipeConnection> ConnectAsync(EventLoop loop, EndPoint endPoint, PipeConnectionOptions? options = null, ConnectOptions? connectOptions = null, CancellationToken cancellationToken = default)
    {
        var handler = new PipeConnectionHandler(options);
        Task<Connection> connecting = Connection.ConnectAsync(loop, endPoint, handler, connectOptions, cancellationToken);
        return Connected(connecting);

        static async Task<PipeConnection> Connected(Task<Connection> connecting)
        {
            var connection = (PipeConnection)(await connecting.ConfigureAwait(false)).UserState!;
#if NET5_0_OR_GREATER
            if (connection.TlsReady is { } handshake)
            {
                // With PipeConnectionOptions.TlsClient: returned once the handshake succeeded; its failure is the task's.
                await handshake.ConfigureAwait(false);
            }
#endif
            return connection;
        }
    }

    /// <summary>
    /// Resets the connection (RST; unsent output is dropped), as <see cref="Connection.Abort"/> does: both pipes complete
    /// with an <see cref="IOException"/> and <see cref="ConnectionClosed"/> fires. Safe from any thread (posted to the
    /// loop unless called there). Idempotent.
    /// </summary>
    public void Abort()
    {
        if (Connection.Loop.IsOnLoopThread)
        {
            AbortOnLoop();
        }
        else
        {
            Connection.Loop.TryPost(s_abortOnLoop, this);
        }
    }

    /// <summary>
    /// Ends the connection gracefully from the application's side: completes <see cref="Transport"/>'s output (what was
    /// flushed is sent, then FIN) and input, and completes when the connection has closed. The application must not use
    /// <see cref="Transport"/> afterwards.
    /// </summary>
    /// <returns>A task that completes when the connection has closed.</returns>
    public ValueTask DisposeAsync()
    {
        Transport.Output.Complete();
        Transport.Input.Complete();
        return new ValueTask(_closedTask.Task);
    }

    /// <summary>Starts the output pump and the application (on the loop thread, in <see cref="ConnectionHandler.OnConnected"/>).</summary>
    internal void Start(Func<PipeConnection, Task>? application)
    {
        PumpOutput();
#if NET5_0_OR_GREATER
        TlsOptions? tls = Connection.Listener is null ? _options.TlsClient : _options.TlsServer;
        if (tls is not null)
        {
            // The handshake first; the application only once it succeeded (PipeConnection.Tls.cs).
            StartTls(tls, application);
            return;
        }
#endif
        StartApplication(application);
    }

    /// <summary>Starts the application: inline when its continuations run on the loop and this is the loop thread, else where they run.</summary>
    private void StartApplication(Func<PipeConnection, Task>? application)
    {
        if (application is null)
        {
            return;
        }

        if (_continuationsOnLoop && !Connection.Loop.IsOnLoopThread)
        {
            if (!Connection.Loop.TryPost(static state => { var (c, a) = ((PipeConnection, Func<PipeConnection, Task>))state!; c.StartApplication(a); }, (this, application)))
            {
                // The loop is gone, and the connection with it.
                Transport.Output.Complete();
                Transport.Input.Complete();
            }

            return;
        }

        Task task;
        if (_continuationsOnLoop)
        {
            // Inline on the loop thread, whose synchronization context then brings its other awaits back here too.
            try
            {
                task = application(this) ?? Task.CompletedTask;
            }
            catch (Exception ex)
            {
                task = Task.FromException(ex);
            }
        }
        else
        {
            // Task.Run starts it with no synchronization context: its awaits never come back to the loop.
            task = Task.Run(() => application(this));
        }

        _application = task;
        task.ContinueWith(s_onApplicationCompleted, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>The listener's graceful shutdown reached the connection (loop thread).</summary>
    internal void OnShutdownRequested() => Dispatch(s_fireCloseRequested, s_fireCloseRequestedOnPool);

    /// <summary>The connection closed (loop thread): completes both pipes and fires the tokens.</summary>
    internal void OnClosed()
    {
        _isClosed = true;
        _closeError = CloseError(Connection);
        OnClosedTls();
        CompleteInputWriter(_closeError);
        StopOutput();
        Dispatch(s_fireClosed, s_fireClosedOnPool);
    }

    /// <summary>
    /// What the pipes are completed with when the connection ends: nothing when it ended in order, else an
    /// <see cref="IOException"/> that names the reason (with the <see cref="SocketException"/> inside when a socket error
    /// ended it).
    /// </summary>
    private static Exception? CloseError(Connection connection)
    {
        ConnectionCloseReason reason = connection.CloseReason;
        if (reason == ConnectionCloseReason.Completed)
        {
            return null;
        }

        string message = reason switch
        {
            ConnectionCloseReason.Reset => "The connection was reset by the peer.",
            ConnectionCloseReason.Aborted => "The connection was aborted.",
            _ => $"The connection ended: {reason}.",
        };
        return connection.SocketError == SocketError.Success
            ? new IOException(message)
            : new IOException(message, new SocketException((int)connection.SocketError));
    }

    /// <summary>The connection closed: the TLS layer's output pump stops (only when TLS is on; see PipeConnection.Tls.cs).</summary>
    partial void OnClosedTls();

    private void AbortOnLoop()
    {
        if (!Connection.IsClosed)
        {
            Connection.Abort();
        }
    }

    /// <summary>The application's task completed (any thread): the rest happens on the loop.</summary>
    private void OnApplicationCompleted()
    {
        if (!Connection.Loop.TryPost(s_applicationCompletedOnLoop, this))
        {
            // The loop is gone (and the connection with it): release the pipes here.
            Transport.Output.Complete();
            Transport.Input.Complete();
        }
    }

    /// <summary>
    /// The application's task completed (loop thread). Done or canceled: the connection closes gracefully (its output is
    /// completed, if the application did not). Faulted: the connection is reset and the exception goes to the loop, as a
    /// handler callback's would — unless it is the transport's own (the exception the pipes were completed with after a
    /// reset) or a cancellation.
    /// </summary>
    private void ApplicationCompletedOnLoop()
    {
        Task task = _application!;
        Exception? fault = null;
        if (task.IsFaulted)
        {
            AggregateException all = task.Exception!;
            fault = all.InnerExceptions.Count == 1 ? all.InnerExceptions[0] : all;
            if (fault is OperationCanceledException || (_closeError is not null && ReferenceEquals(fault, _closeError)))
            {
                fault = null;
            }
        }

        if (fault is not null && !Connection.IsClosed)
        {
            Connection.AbortFor(ConnectionCloseReason.HandlerFault);
        }

        Transport.Output.Complete();
        Transport.Input.Complete();
        if (fault is not null)
        {
            ExceptionDispatchInfo.Capture(fault).Throw();
        }
    }

    private void FireClosed()
    {
        FireCloseRequested();
        Cancel(_closed);
        _closedTask.TrySetResult(true);
    }

    private void FireCloseRequested() => Cancel(_closeRequested);

    /// <summary>Fires a token; an exception from one of its callbacks goes to the loop, as a handler callback's would (never lost, never a crash of a pool thread).</summary>
    private void Cancel(CancellationTokenSource source)
    {
        try
        {
            source.Cancel();
        }
        catch (Exception ex)
        {
            Connection.Loop.TryPost(static e => ExceptionDispatchInfo.Capture((Exception)e!).Throw(), ex);
        }
    }

    /// <summary>Runs a token's callbacks where the application's continuations run, never inside the loop's current callback.</summary>
    private void Dispatch(Action<object?> onLoop, WaitCallback onPool)
    {
        if (!_continuationsOnLoop || !Connection.Loop.TryPost(onLoop, this))
        {
            ThreadPool.UnsafeQueueUserWorkItem(onPool, this);
        }
    }

    private sealed class DuplexPipe : IDuplexPipe
    {
        public DuplexPipe(PipeReader input, PipeWriter output)
        {
            Input = input;
            Output = output;
        }

        public PipeReader Input { get; }

        public PipeWriter Output { get; }
    }
}
