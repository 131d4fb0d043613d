using System;
using System.Collections.Generic;

namespace EpollSharp;

public sealed partial class EventLoop
{
    /// <summary>Guarded by <see cref="_lifecycleLock"/>.</summary>
    private readonly List<ReleaseHook> _releaseHooks = new();

    /// <summary>
    /// Asks for <paramref name="callback"/> to run when the loop is released (on the loop thread, after the work posted
    /// before <see cref="Dispose"/> and before the registrations and timers are dropped), so that what lives on the loop
    /// (a listener, its connections) is closed whatever state the loop was in. Remove it with
    /// <see cref="RemoveReleaseHook"/> once there is nothing left to close.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The loop was disposed.</exception>
    internal ReleaseHook AddReleaseHook(Action<object?> callback, object? state)
    {
        var hook = new ReleaseHook(callback, state);
        lock (_lifecycleLock)
        {
            if (_disposed)
            {
                throw new ObjectDisposedException(nameof(EventLoop));
            }

            _releaseHooks.Add(hook);
        }

        return hook;
    }

    /// <summary>Removes a hook added by <see cref="AddReleaseHook"/>; does nothing if it ran or was removed already.</summary>
    internal void RemoveReleaseHook(ReleaseHook hook)
    {
        lock (_lifecycleLock)
        {
            _releaseHooks.Remove(hook);
        }
    }

    private void RunReleaseHooks()
    {
        ReleaseHook[] hooks;
        lock (_lifecycleLock)
        {
            hooks = _releaseHooks.ToArray();
            _releaseHooks.Clear();
        }

        foreach (ReleaseHook hook in hooks)
        {
            try
            {
                hook.Callback(hook.State);
            }
            catch (Exception ex)
            {
                OnCallbackException(ex);
            }
        }
    }

    /// <summary>A callback for the loop's release; see <see cref="AddReleaseHook"/>.</summary>
    internal sealed class ReleaseHook
    {
        internal ReleaseHook(Action<object?> callback, object? state)
        {
            Callback = callback;
            State = state;
        }

        internal Action<object?> Callback { get; }

        internal object? State { get; }
    }
}
