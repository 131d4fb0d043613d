using System;
using System.Threading;

namespace EpollSharp;

public sealed partial class EventLoop
{
    private readonly object _postLock = new();
    private WorkItem[] _incoming = new WorkItem[64];
    private WorkItem[] _processing = new WorkItem[64];
    private int _incomingCount;
    private bool _postingClosed;

    /// <summary>1 while a wake-up is outstanding: coalesces wake-ups until the loop takes its posted work.</summary>
    private int _wakeRequested;

    private bool HasPostedWork => Volatile.Read(ref _incomingCount) != 0;

    /// <summary>Queues <paramref name="action"/> to run on the loop thread. Safe from any thread.</summary>
    /// <param name="action">The work.</param>
    /// <exception cref="ArgumentNullException"><paramref name="action"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public void Post(Action action)
    {
        if (action is null)
        {
            throw new ArgumentNullException(nameof(action));
        }

        Enqueue(action, null);
    }

    /// <summary>
    /// Queues <paramref name="action"/> with <paramref name="state"/> to run on the loop thread. With a static
    /// lambda this allocates nothing once the queue has grown to its working size. Safe from any thread.
    /// Work posted from one thread runs in the order it was posted.
    /// </summary>
    /// <param name="action">The work.</param>
    /// <param name="state">Passed to <paramref name="action"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="action"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    public void Post(Action<object?> action, object? state)
    {
        if (action is null)
        {
            throw new ArgumentNullException(nameof(action));
        }

        Enqueue(action, state);
    }

    /// <summary>Like <see cref="Post(Action{object?}, object?)"/>, but returns <see langword="false"/> instead of throwing when the loop was disposed.</summary>
    /// <param name="action">The work.</param>
    /// <param name="state">Passed to <paramref name="action"/>.</param>
    /// <returns>Whether the work was queued.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="action"/> is null.</exception>
    public bool TryPost(Action<object?> action, object? state)
    {
        if (action is null)
        {
            throw new ArgumentNullException(nameof(action));
        }

        return TryEnqueue(action, state);
    }

    internal void Enqueue(object callback, object? state)
    {
        if (!TryEnqueue(callback, state))
        {
            throw new ObjectDisposedException(nameof(EventLoop), "The event loop was disposed; work can no longer be posted to it.");
        }
    }

    internal bool TryEnqueue(object callback, object? state)
    {
        lock (_postLock)
        {
            if (_postingClosed)
            {
                return false;
            }

            if (_incomingCount == _incoming.Length)
            {
                Array.Resize(ref _incoming, _incoming.Length * 2);
            }

            _incoming[_incomingCount] = new WorkItem(callback, state);
            Volatile.Write(ref _incomingCount, _incomingCount + 1);
        }

        // On the loop thread the next timeout computation sees the work: no wake-up (three syscalls) needed.
        if (!IsOnLoopThread)
        {
            RequestWake();
        }

        return true;
    }

    /// <summary>Wakes the backend unless a wake-up is already outstanding.</summary>
    internal void RequestWake()
    {
        if (Interlocked.Exchange(ref _wakeRequested, 1) != 0)
        {
            Interlocked.Increment(ref _wakeupsCoalesced);
        }
        else
        {
            Interlocked.Increment(ref _wakeupsSent);
            try
            {
                _backend.Wake();
            }
            catch (ObjectDisposedException)
            {
                // The loop was released: nothing waits any more.
            }
        }
    }

    private void ClosePosting()
    {
        lock (_postLock)
        {
            _postingClosed = true;
        }
    }

    private void RunPostedWork()
    {
        // Reset before taking the queue: a post that lands after the swap sees 0 and wakes the next wait.
        Volatile.Write(ref _wakeRequested, 0);
        WorkItem[] batch;
        int count;
        lock (_postLock)
        {
            count = _incomingCount;
            if (count == 0)
            {
                return;
            }

            batch = _incoming;
            _incoming = _processing;
            _processing = batch;
            Volatile.Write(ref _incomingCount, 0);
        }

        for (int i = 0; i < count; i++)
        {
            WorkItem item = batch[i];
            batch[i] = default;
            BeginCallback(LoopCallbackKind.PostedWork, item.Callback, item.State);
            try
            {
                item.Invoke();
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
    }

    private readonly struct WorkItem
    {
        private readonly object _callback;
        private readonly object? _state;

        public WorkItem(object callback, object? state)
        {
            _callback = callback;
            _state = state;
        }

        /// <summary>The delegate: an <see cref="Action{T}"/>, <see cref="Action"/> or <see cref="SendOrPostCallback"/>.</summary>
        public object Callback => _callback;

        /// <summary>The state passed to it.</summary>
        public object? State => _state;

        public void Invoke()
        {
            switch (_callback)
            {
                case Action<object?> withState:
                    withState(_state);
                    break;
                case Action plain:
                    plain();
                    break;
                case SendOrPostCallback post:
                    post(_state);
                    break;
                default:
                    ((Action<object?>)_callback)(_state);
                    break;
            }
        }
    }
}
