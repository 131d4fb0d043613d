using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;
using EpollSharp.Backends;

namespace EpollSharp;

/// <summary>
/// A single-threaded reactor: register sockets and handles, get readiness callbacks, post work from
/// any thread, and run timers, all on one thread, the loop thread.
/// </summary>
/// <remarks>
/// <para><b>One iteration</b> of <see cref="Run"/> does, in order:</para>
/// <list type="number">
/// <item>Compute the wait timeout: 0 when work is posted, a stop is requested or the last wait filled the
///   event buffer; otherwise until the earliest timer is due (rounded up to the next millisecond); otherwise infinite.</item>
/// <item>Wait for readiness (the backend's <c>epoll_wait</c> / <c>kevent</c> / select), or a wake-up.</item>
/// <item>Dispatch each readiness event to its registration's callback, in the order the kernel returned them,
///   skipping registrations disposed in the meantime.</item>
/// <item>Run the timers that are due, in due order.</item>
/// <item>Run the work posted before this step began, in the order it was posted (work posted by this step runs next iteration).</item>
/// </list>
/// <para><b>Threads.</b> <see cref="Run"/> and <see cref="Start(string?)"/> make a thread the loop thread. Callbacks only ever run
/// there. <see cref="Post(Action)"/>, <see cref="Stop"/>, <see cref="Dispose"/>, the registration and timer members and
/// <see cref="IsOnLoopThread"/> are safe from any thread.</para>
/// <para><b>Exceptions</b> thrown by callbacks go to <see cref="EventLoopOptions.UnhandledExceptionHandler"/>; without one, the loop
/// finishes the iteration, stops, and <see cref="Run"/> rethrows (an <see cref="AggregateException"/> if several callbacks threw).</para>
/// </remarks>
public sealed partial class EventLoop : IDisposable
{
    private readonly IPollBackend _backend;

    /// <summary>The backend's completion side (io_uring, when set up): the connection layer's receives and sends; null otherwise.</summary>
    private readonly ICompletionIo? _completionIo;
    private readonly BackendEvent[] _events;
    private readonly Action<Exception>? _exceptionHandler;
    private readonly string _threadName;
    private readonly object _lifecycleLock = new();
    private readonly ManualResetEventSlim _runExited = new(initialState: true);
    private readonly LoopSynchronizationContext _synchronizationContext;
    private readonly LoopTaskScheduler _taskScheduler;
    private readonly Microsoft.Extensions.Logging.ILoggerFactory _loggerFactory;
    private readonly Microsoft.Extensions.Logging.ILogger _logger;

    private volatile bool _stopRequested;
    private bool _running;
    private bool _disposed;
    private bool _disposeWhenRunExits;
    private bool _released;
    private int _loopThreadId;
    private bool _lastWaitFilledBuffer;
    private long _iterationTimestamp;
    private List<Exception>? _fatal;

    /// <summary>Creates a loop with default options (the platform's best backend).</summary>
    /// <exception cref="PlatformNotSupportedException">No backend is available.</exception>
    public EventLoop()
        : this(null)
    {
    }

    /// <summary>Creates a loop.</summary>
    /// <param name="options">Options; <see langword="null"/> for the defaults.</param>
    /// <exception cref="PlatformNotSupportedException">The requested backend is not available on this platform.</exception>
    /// <exception cref="InvalidOperationException"><c>EPOLLSHARP_BACKEND</c> holds an unknown value.</exception>
    public EventLoop(EventLoopOptions? options)
    {
        options ??= new EventLoopOptions();
        if (!Enum.IsDefined(typeof(EventLoopBackend), options.Backend))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Backend, "Unknown EventLoopBackend value.");
        }

        _backend = BackendFactory.Create(options.Backend, options.MaxEventsPerWait, options.IoUringCompletions);
        _events = new BackendEvent[options.MaxEventsPerWait];
        _completionIo = _backend is ICompletionIo { Enabled: true } completions ? completions : null;
        _exceptionHandler = options.UnhandledExceptionHandler;
        _threadName = options.ThreadName;
        _synchronizationContext = new LoopSynchronizationContext(this);
        _taskScheduler = new LoopTaskScheduler(this);
        _loggerFactory = options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger(LoopLog.Category);
        _budgetTicks = ToStopwatchTicks(options.CallbackBudget);
        if (_budgetTicks != 0)
        {
            CallbackWatchdog.Add(this);
        }

        InitializeMetrics();
    }

    /// <summary>The logger factory of the options (a null one when none was given), for the layers above the loop.</summary>
    internal Microsoft.Extensions.Logging.ILoggerFactory LoggerFactory => _loggerFactory;

    /// <summary>The loop's own logger (category <c>EpollSharp.EventLoop</c>).</summary>
    internal Microsoft.Extensions.Logging.ILogger Logger => _logger;

    /// <summary>The backend this loop uses (never <see cref="EventLoopBackend.Auto"/>).</summary>
    public EventLoopBackend Backend => _backend.Kind;

    /// <summary>
    /// The backend's completion I/O when it offers it (io_uring with multishot receive and provided buffer rings), for the
    /// connection layer; null when streams are to use readiness.
    /// </summary>
    internal ICompletionIo? CompletionIo => _completionIo;

    /// <summary>Whether the calling thread is this loop's thread, inside <see cref="Run"/>.</summary>
    public bool IsOnLoopThread => Volatile.Read(ref _loopThreadId) == Environment.CurrentManagedThreadId;

    /// <summary>Whether <see cref="Run"/> is executing (on any thread).</summary>
    public bool IsRunning
    {
        get
        {
            lock (_lifecycleLock)
            {
                return _running;
            }
        }
    }

    /// <summary>Whether <see cref="Dispose"/> was called.</summary>
    public bool IsDisposed
    {
        get
        {
            lock (_lifecycleLock)
            {
                return _disposed;
            }
        }
    }

    /// <summary>A <see cref="System.Threading.SynchronizationContext"/> that posts to this loop. <see cref="Run"/> installs it on the loop thread, so <c>await</c> in a callback continues on the loop.</summary>
    public SynchronizationContext SynchronizationContext => _synchronizationContext;

    /// <summary>A <see cref="System.Threading.Tasks.TaskScheduler"/> that runs tasks on this loop, e.g. with <c>Task.Factory.StartNew(..., loop.TaskScheduler)</c>.</summary>
    public TaskScheduler TaskScheduler => _taskScheduler;

    /// <summary>
    /// Runs the loop on the calling thread until <see cref="Stop"/> or <see cref="Dispose"/> is called.
    /// A stop requested before <see cref="Run"/> makes it return after one iteration.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    /// <exception cref="InvalidOperationException">The loop is already running (also when called from one of its own callbacks).</exception>
    /// <exception cref="Exception">An exception a callback threw, when no <see cref="EventLoopOptions.UnhandledExceptionHandler"/> handled it.</exception>
    public void Run()
    {
        Reserve();
        RunReserved();
    }

    /// <summary>
    /// Starts the loop on a new background thread and returns once it runs.
    /// </summary>
    /// <param name="threadName">The thread's name; <see langword="null"/> for <see cref="EventLoopOptions.ThreadName"/>.</param>
    /// <returns>A task that completes when the loop stops; faulted with the exception <see cref="Run"/> would have thrown.</returns>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    /// <exception cref="InvalidOperationException">The loop is already running.</exception>
    public Task Start(string? threadName = null)
    {
        Reserve();
        var completion = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                RunReserved();
                completion.SetResult(true);
            }
            catch (Exception ex)
            {
                completion.SetException(ex);
            }
        })
        {
            IsBackground = true,
            Name = threadName ?? _threadName,
        };
        try
        {
            thread.Start();
        }
        catch
        {
            // The thread did not start (.NET throws OutOfMemoryException when, for one, no descriptor is free): give the
            // reservation back, or the loop would count as running for ever and Dispose would wait for it.
            Unreserve();
            throw;
        }

        return completion.Task;
    }

    /// <summary>
    /// Asks the loop to stop: <see cref="Run"/> returns after the current iteration (called before <see cref="Run"/>, it makes
    /// the next <see cref="Run"/> do one iteration, which runs the work posted so far, and return). Safe from any thread and
    /// from callbacks; idempotent. Registrations, timers and queued work stay, for the next <see cref="Run"/> or for
    /// <see cref="Dispose"/>.
    /// </summary>
    public void Stop()
    {
        _stopRequested = true;
        RequestWake();
    }

    /// <summary>
    /// Stops the loop and releases it: every registration is disposed, every timer cancelled, the backend closed.
    /// Posting afterwards throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <remarks>
    /// <para>From the loop thread (inside a callback) the release happens when <see cref="Run"/> unwinds. From another
    /// thread while the loop runs, this waits for the current iteration to finish.</para>
    /// <para>Nothing posted is lost: work posted before <see cref="Dispose"/> runs during the release, on the loop thread
    /// when the loop is running, and otherwise (never run, stopped, or ended by an exception) on the thread that calls
    /// <see cref="Dispose"/>, which is the loop thread for that time (<see cref="IsOnLoopThread"/> is true there). So
    /// disposing a listener and then its stopped loop still closes the listener and its connections. Exceptions that
    /// work throws then go to <see cref="EventLoopOptions.UnhandledExceptionHandler"/>; without one, <see cref="Dispose"/>
    /// (or <see cref="Run"/>, when it was running) rethrows them once everything is released.</para>
    /// <para>A continuation that reaches the loop's <see cref="SynchronizationContext"/> after <see cref="Dispose"/> (an
    /// <c>await</c> that completes later) runs on the thread pool instead, with no synchronization context; a task queued
    /// to its <see cref="TaskScheduler"/> faults with a <see cref="TaskSchedulerException"/>.</para>
    /// </remarks>
    /// <exception cref="Exception">Work posted before the dispose of a loop that was not running threw, and no
    /// <see cref="EventLoopOptions.UnhandledExceptionHandler"/> handled it.</exception>
    public void Dispose()
    {
        bool releaseNow = false;
        bool waitForRun = false;
        lock (_lifecycleLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            if (_running)
            {
                _disposeWhenRunExits = true;
                waitForRun = !IsOnLoopThread;
            }
            else
            {
                releaseNow = true;
            }
        }

        ClosePosting();
        if (releaseNow)
        {
            ReleaseAsLoopThread();
            ThrowFatal();
        }
        else
        {
            Stop();
            if (waitForRun)
            {
                _runExited.Wait();
            }
        }
    }

    private void Reserve()
    {
        lock (_lifecycleLock)
        {
            if (_disposed)
            {
                throw new ObjectDisposedException(nameof(EventLoop));
            }

            if (_running)
            {
                throw new InvalidOperationException(IsOnLoopThread
                    ? "Run was called from inside one of this loop's callbacks; a loop cannot run re-entrantly."
                    : "The loop is already running on another thread; one thread runs a loop.");
            }

            _running = true;
            _runExited.Reset();
        }
    }

    /// <summary>Undoes <see cref="Reserve"/> when the run never started; releases the loop if it was disposed meanwhile.</summary>
    private void Unreserve()
    {
        bool release;
        lock (_lifecycleLock)
        {
            _running = false;
            release = _disposeWhenRunExits;
        }

        _stopRequested = false;
        if (release)
        {
            ReleaseAsLoopThread();
        }

        _runExited.Set();
    }

    private void RunReserved()
    {
        Volatile.Write(ref _loopThreadId, Environment.CurrentManagedThreadId);
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(_synchronizationContext);
        LoopLog.LoopStarted(_logger, Backend, Thread.CurrentThread.Name);
        try
        {
            // At least one iteration: a stop requested before Run still runs the work posted so far.
            do
            {
                RunOnce();
            }
            while (!_stopRequested);
        }
        finally
        {
            _stopRequested = false;
            LoopLog.LoopStopped(_logger, Backend);
            bool release;
            bool closePosting = false;
            lock (_lifecycleLock)
            {
                if (DisposeWhenRunEnds && !_disposed)
                {
                    // An owner (a loop group) wants the loop released as soon as it stops on its own.
                    _disposed = true;
                    _disposeWhenRunExits = true;
                    closePosting = true;
                }

                release = _disposeWhenRunExits;
            }

            if (closePosting)
            {
                ClosePosting();
            }

            if (release)
            {
                // Still the loop thread, with the loop's context installed.
                Release();
            }
            else if (_backend is ILoopRunAware runAware)
            {
                runAware.RunEnded();
            }

            SynchronizationContext.SetSynchronizationContext(previous);
            Volatile.Write(ref _loopThreadId, 0);
            lock (_lifecycleLock)
            {
                _running = false;
            }

            _runExited.Set();
        }

        ThrowFatal();
    }

    /// <summary>
    /// Set by an owner before the loop runs: when <see cref="Run"/> ends for any reason (a <see cref="Stop"/>, an unhandled
    /// exception), the loop disposes itself, on its own thread, before <see cref="Run"/> returns or rethrows. An
    /// <see cref="Connections.EventLoopGroup"/> sets it, so that a loop of the group that dies closes what lives on it at once,
    /// with no thread pool work (which a process out of descriptors may not be able to start).
    /// </summary>
    internal bool DisposeWhenRunEnds { get; set; }

    /// <summary>Rethrows what callbacks threw with no handler to take it (one exception as itself, several as an <see cref="AggregateException"/>).</summary>
    private void ThrowFatal()
    {
        List<Exception>? fatal = _fatal;
        _fatal = null;
        if (fatal is not null)
        {
            if (fatal.Count == 1)
            {
                ExceptionDispatchInfo.Capture(fatal[0]).Throw();
            }

            throw new AggregateException("Several event loop callbacks threw.", fatal);
        }
    }

    /// <summary>
    /// When the current iteration's wait returned, in <see cref="Stopwatch"/> ticks (loop thread; 0 before the first
    /// wait): a clock for what needs no finer time than one iteration, such as a connection's last activity, read once per
    /// iteration rather than once per receive and send. It is behind the true time by at most the time the iteration's
    /// callbacks have taken so far.
    /// </summary>
    internal long IterationTimestamp => _iterationTimestamp;

    /// <summary>One iteration: wait, dispatch, timers, posted work.</summary>
    private void RunOnce()
    {
        int timeout = ComputeTimeout();
        bool timing = LoopMetrics.TimingEnabled;
        long waitStart = timing ? Stopwatch.GetTimestamp() : 0;
        int n = _backend.Wait(_events, timeout);
        long woke = Stopwatch.GetTimestamp();
        _iterationTimestamp = woke;
        RecordWait(n);
        _lastWaitFilledBuffer = n == _events.Length;
        for (int i = 0; i < n; i++)
        {
            Dispatch(_events[i].Token, _events[i].Readiness, _events[i].SocketError);
        }

        if (_completionIo is not null)
        {
            DispatchCompletions(_completionIo);
        }

        RunDueTimers();
        RunPostedWork();
        if (_completionIo is not null)
        {
            RunDeferredSends(_completionIo);
        }

        if (timing)
        {
            Volatile.Write(ref _waitTicks, _waitTicks + (woke - waitStart));
            Volatile.Write(ref _busyTicks, _busyTicks + (Stopwatch.GetTimestamp() - woke));
        }
    }

    /// <summary>Hands the completions the wait reaped to their sinks, each as one callback.</summary>
    private void DispatchCompletions(ICompletionIo completions)
    {
        int count = completions.PendingCompletions;
        for (int i = 0; i < count; i++)
        {
            BeginCallback(LoopCallbackKind.Readiness, completions.SinkOf(i), null);
            try
            {
                completions.DispatchCompletion(i);
            }
            catch (Exception ex)
            {
                OnCallbackException(ex);
            }
            finally
            {
                EndCallback();
            }
        }

        if (count > 0)
        {
            completions.CompletionsDispatched();
        }
    }

    /// <summary>The sends the iteration's callbacks deferred to its end (<see cref="ICompletionIo.DeferSend"/>).</summary>
    private void RunDeferredSends(ICompletionIo completions)
    {
        try
        {
            completions.RunDeferredSends();
        }
        catch (Exception ex)
        {
            OnCallbackException(ex);
        }
    }

    private int ComputeTimeout()
    {
        if (_stopRequested || _lastWaitFilledBuffer || HasPostedWork)
        {
            return 0;
        }

        return TimeoutUntilNextTimer();
    }

    /// <summary>Handles an exception thrown by a callback; never lets it escape the iteration.</summary>
    private void OnCallbackException(Exception ex)
    {
        LoopLog.CallbackException(_logger, ex, _exceptionHandler is null ? "no UnhandledExceptionHandler: the loop stops and Run rethrows it" : "passed to the UnhandledExceptionHandler");
        if (_exceptionHandler is not null)
        {
            try
            {
                _exceptionHandler(ex);
                return;
            }
            catch (Exception handlerException)
            {
                ex = handlerException;
            }
        }

        (_fatal ??= new List<Exception>()).Add(ex);
        _stopRequested = true;
    }

    /// <summary>
    /// Releases a loop that is not running (disposed before, between or after runs) on the calling thread, which acts as
    /// the loop thread meanwhile: no other thread can run the loop any more, because it is disposed.
    /// </summary>
    private void ReleaseAsLoopThread()
    {
        int previousId = Interlocked.Exchange(ref _loopThreadId, Environment.CurrentManagedThreadId);
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(_synchronizationContext);
        try
        {
            Release();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
            Volatile.Write(ref _loopThreadId, previousId);
        }
    }

    /// <summary>
    /// On the loop thread, once: runs the work posted before the dispose, then the release hooks (the connection layer
    /// closes what lives on this loop), then disposes every registration, cancels every timer and closes the backend.
    /// </summary>
    private void Release()
    {
        try
        {
            RunPostedWork();
            RunReleaseHooks();
        }
        finally
        {
            Volatile.Write(ref _released, true);
            LoopLog.LoopDisposed(_logger, Backend, RegistrationCount, ActiveTimerCount);
            if (_budgetTicks != 0)
            {
                CallbackWatchdog.Remove(this);
            }

            LoopMetrics.Remove(this);
            DeregisterAll();
            CancelAllTimers();
            _backend.Dispose();
        }
    }

    /// <summary>
    /// Registering and scheduling are refused once the loop is disposed, except on the loop thread while the release runs
    /// the work posted before it and the release hooks: that work may still register and schedule (what it creates is
    /// dropped with everything else right after), so it runs as it would have on a running loop.
    /// </summary>
    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _released) || (Volatile.Read(ref _disposed) && !IsOnLoopThread))
        {
            throw new ObjectDisposedException(nameof(EventLoop));
        }
    }
}
