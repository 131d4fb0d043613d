using System;
using System.Runtime.ExceptionServices;
using System.Threading;

namespace EpollSharp.Connections;

public sealed partial class Connection
{
    /// <summary>
    /// Runs <paramref name="work"/> on the thread pool, then <paramref name="continuation"/> with its result on this
    /// connection's loop thread, so CPU-bound or blocking work does not stall the loop's other connections.
    /// </summary>
    /// <remarks>
    /// <para>Reading goes on meanwhile: if your protocol needs answers in order, call <see cref="PauseReceiving"/> before and
    /// <see cref="ResumeReceiving"/> in the continuation. A graceful <see cref="Close()"/> waits for pending offloads (within its
    /// deadline) before it shuts the output, so their results can still be written.</para>
    /// <para>If the connection has closed by the time the work is done, the continuation is not called and the result is dropped.
    /// If <paramref name="work"/> throws, the connection is reset (<see cref="ConnectionCloseReason.HandlerFault"/>) and the exception
    /// is rethrown on the loop thread, where it reaches <see cref="EventLoopOptions.UnhandledExceptionHandler"/>.</para>
    /// <para>An alternative with tasks: inside a callback, <c>Task.Run(work).ContinueWith(t => ..., connection.Loop.TaskScheduler)</c>;
    /// or, in an <c>async</c> method started on the loop thread, <c>await Task.Run(work)</c> resumes on the loop, whose
    /// <see cref="System.Threading.SynchronizationContext"/> is installed while it runs.</para>
    /// </remarks>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="work">The work; runs on a thread-pool thread and must not touch the connection.</param>
    /// <param name="continuation">Called on the loop thread with the connection and the result.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Offload<TResult>(Func<TResult> work, Action<Connection, TResult> continuation)
    {
        if (work is null)
        {
            throw new ArgumentNullException(nameof(work));
        }

        if (continuation is null)
        {
            throw new ArgumentNullException(nameof(continuation));
        }

        ThrowIfNotOnLoop();
        QueueOffload(new OffloadItem<TResult>(this, work, continuation));
    }

    /// <summary>
    /// Like <see cref="Offload{TResult}(Func{TResult}, Action{Connection, TResult})"/>, with a state object passed to both
    /// delegates, so that static lambdas (no closures) can be used.
    /// </summary>
    /// <typeparam name="TState">The state type.</typeparam>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="state">Passed to <paramref name="work"/> and <paramref name="continuation"/>.</param>
    /// <param name="work">The work; runs on a thread-pool thread and must not touch the connection.</param>
    /// <param name="continuation">Called on the loop thread with the connection, the state and the result.</param>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> or <paramref name="continuation"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Not called on the connection's loop thread.</exception>
    public void Offload<TState, TResult>(TState state, Func<TState, TResult> work, Action<Connection, TState, TResult> continuation)
    {
        if (work is null)
        {
            throw new ArgumentNullException(nameof(work));
        }

        if (continuation is null)
        {
            throw new ArgumentNullException(nameof(continuation));
        }

        ThrowIfNotOnLoop();
        QueueOffload(new OffloadItem<TState, TResult>(this, state, work, continuation));
    }

    /// <summary>Queues <paramref name="item"/> to the thread pool and counts it as pending; nothing once the connection closed.</summary>
    private void QueueOffload(OffloadItem item)
    {
        if (Has(ConnectionFlags.Closed))
        {
            return;
        }

        _pendingOffloads++;
        item.Queue();
    }

    /// <summary>On the loop thread: the offloaded work finished.</summary>
    private void CompleteOffload(OffloadItem item, ExceptionDispatchInfo? error)
    {
        _pendingOffloads--;
        Guarded(static (c, done, _) => c.ContinueOffload(done.Item, done.Error), (Item: item, Error: error));
    }

    /// <summary>The body of <see cref="CompleteOffload"/>: rethrows the work's exception (the connection is reset), or runs the continuation; a close moves on.</summary>
    private bool ContinueOffload(OffloadItem item, ExceptionDispatchInfo? error)
    {
        if (error is not null)
        {
            Fault();
            error.Throw();
        }

        if (!Has(ConnectionFlags.Closed))
        {
            item.Continue();
        }

        if (Has(ConnectionFlags.CloseRequested))
        {
            ProceedClose();
        }

        return true;
    }

    /// <summary>
    /// Work queued to the thread pool whose continuation is posted back to the connection's loop. Allocated once per offload.
    /// How it is queued differs by target: <c>Connection.Offload.NetCoreApp.cs</c> (an <c>IThreadPoolWorkItem</c>) and
    /// <c>Connection.Offload.NetStandard.cs</c> (a <see cref="WaitCallback"/>) each declare <c>Queue</c>.
    /// </summary>
    private abstract partial class OffloadItem
    {
        private static readonly Action<object?> s_complete = static state =>
        {
            var item = (OffloadItem)state!;
            item.Connection.CompleteOffload(item, item._error);
        };

        private ExceptionDispatchInfo? _error;

        protected OffloadItem(Connection connection) => Connection = connection;

        protected Connection Connection { get; }

        /// <summary>On a thread-pool thread: runs the work, keeps its exception, and posts the completion to the loop.</summary>
        public void Execute()
        {
            try
            {
                Run();
            }
            catch (Exception ex)
            {
                _error = ExceptionDispatchInfo.Capture(ex);
            }

            // A loop that was disposed meanwhile has closed its connections' registrations: nothing to continue.
            Connection.Loop.TryPost(s_complete, this);
        }

        public abstract void Continue();

        protected abstract void Run();
    }

    private sealed class OffloadItem<TResult> : OffloadItem
    {
        private readonly Func<TResult> _work;
        private readonly Action<Connection, TResult> _continuation;
        private TResult _result = default!;

        public OffloadItem(Connection connection, Func<TResult> work, Action<Connection, TResult> continuation)
            : base(connection)
        {
            _work = work;
            _continuation = continuation;
        }

        public override void Continue() => _continuation(Connection, _result);

        protected override void Run() => _result = _work();
    }

    private sealed class OffloadItem<TState, TResult> : OffloadItem
    {
        private readonly TState _state;
        private readonly Func<TState, TResult> _work;
        private readonly Action<Connection, TState, TResult> _continuation;
        private TResult _result = default!;

        public OffloadItem(Connection connection, TState state, Func<TState, TResult> work, Action<Connection, TState, TResult> continuation)
            : base(connection)
        {
            _state = state;
            _work = work;
            _continuation = continuation;
        }

        public override void Continue() => _continuation(Connection, _state, _result);

        protected override void Run() => _result = _work(_state);
    }
}
