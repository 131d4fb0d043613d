using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Threading;

namespace EpollSharp.Backends;

/// <summary>
/// A helper thread of <see cref="ManagedBackend"/> (one of its <see cref="ManagedWatcherPool"/>) that blocks in <see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, int)"/>
/// on one group of sockets while the loop thread blocks on another.
/// </summary>
/// <remarks>
/// <para>Socket.Select allocates its poll array on the heap once the three lists hold 80 sockets or more, so one
/// allocation-free Select cannot watch thousands of sockets. The backend splits the sockets of a blocking wait into
/// groups of at most <see cref="ManagedSelectSet.Capacity"/> list entries; the loop thread takes the first group, a watcher each further one.</para>
/// <para>One round: the loop fills <see cref="Lists"/> (the first read entry is the recall socket) and calls <see cref="Go"/>;
/// the watcher selects without a timeout; when anything but the recall socket is
/// ready it wakes the loop; then it parks. The loop, once its own wait ends, signals the recall socket so every watcher
/// still selecting returns, waits until all have parked, and drains the recall socket. Results are not passed back:
/// the loop rescans everything itself. The lists are touched by the loop only while the watcher is parked.</para>
/// </remarks>
internal sealed class ManagedWatcher
{
    private readonly ManagedWatcherPool _owner;
    private readonly Thread _thread;
    private readonly object _sync = new();
    private bool _go;
    private bool _exit;

    /// <summary>Starts watcher thread number <paramref name="number"/> of <paramref name="owner"/>; it parks until <see cref="Go"/>.</summary>
    public ManagedWatcher(ManagedWatcherPool owner, int number)
    {
        _owner = owner;

        // Select needs a few hundred bytes of stack; 256 KiB leaves room for the runtime's own frames.
        _thread = new Thread(Run, 256 * 1024)
        {
            IsBackground = true,
            Name = "EpollSharp managed watcher " + number.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        _thread.Start();
    }

    /// <summary>The sockets to watch; the first of the read list is the recall socket.</summary>
    public ManagedSelectSet Lists { get; } = new();

    /// <summary>Starts one round (the lists are filled).</summary>
    public void Go()
    {
        lock (_sync)
        {
            _go = true;
            Monitor.Pulse(_sync);
        }
    }

    /// <summary>Ends the thread once it is parked (or at once if it is).</summary>
    public void Stop()
    {
        lock (_sync)
        {
            _exit = true;
            Monitor.Pulse(_sync);
        }
    }

    private void Run()
    {
        while (true)
        {
            lock (_sync)
            {
                while (!_go && !_exit)
                {
                    Monitor.Wait(_sync);
                }

                if (_exit)
                {
                    return;
                }

                _go = false;
            }

            bool wakeLoop;
            try
            {
                Lists.Select(-1);
                List<Socket> read = Lists.Read.Sockets;
                wakeLoop = Lists.Write.Sockets.Count > 0 || Lists.Error.Sockets.Count > 0 || read.Count > 1
                    || (read.Count == 1 && !ReferenceEquals(read[0], _owner.RecallReceiver));
            }
            catch (Exception)
            {
                // Never let an exception end this thread (that would end the process). Let the loop's rescan find out
                // which socket is at fault (it probes them one by one); pause a little so that a persistent fault cannot
                // turn this into a busy loop.
                wakeLoop = true;
                Thread.Sleep(1);
            }

            _owner.WatcherDone(wakeLoop);
        }
    }
}
