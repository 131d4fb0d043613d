using System;
using System.IO.Pipelines;

namespace EpollSharp.Connections;

// The pipes' options and schedulers, shared by the connections a loop thread makes with the same settings, rather than
// made for each connection. System.IO.Pipelines reads its PipeOptions (thresholds, schedulers, pool, segment size) on
// every GetSpan, FlushAsync, ReadAsync and AdvanceTo: with one set per connection, each message of a loop serving a
// thousand connections loaded those cold objects again; shared, they stay in the cache.
public sealed partial class PipeConnection
{
    /// <summary>The last set made on this thread: connections are made on their loop's thread, so one per loop and handler.</summary>
    [ThreadStatic]
    private static SharedPipeOptions? t_sharedOptions;

    /// <summary>The set for <paramref name="options"/> on <paramref name="loop"/>: this thread's last one if it matches, else a new one (kept as the last).</summary>
    private static SharedPipeOptions SharedOptionsFor(PipeConnectionOptions options, EventLoop loop)
    {
        SharedPipeOptions? shared = t_sharedOptions;
        if (shared is null || !ReferenceEquals(shared.Options, options) || (options.RunContinuationsOnLoop && !ReferenceEquals(shared.Loop, loop)))
        {
            t_sharedOptions = shared = new SharedPipeOptions(options, loop);
        }

        return shared;
    }

    /// <summary>Both pipes' options for one <see cref="PipeConnectionOptions"/> (and, with continuations on the loop, one loop).</summary>
    private sealed class SharedPipeOptions
    {
        public SharedPipeOptions(PipeConnectionOptions options, EventLoop loop)
        {
            Options = options;
            Loop = loop;
            bool onLoop = options.RunContinuationsOnLoop;
            PipeScheduler application = onLoop ? new LoopPipeScheduler(loop) : PipeScheduler.ThreadPool;

            // Input (continuations on the thread pool only; on the loop the input is PipeConnection.LoopInput.cs's reader):
            // the loop writes (its flush continuation only posts to the loop, so Inline), the application reads.
            Input = new PipeOptions(
                pool: options.MemoryPool ?? PipeBlockPool.Instance,
                readerScheduler: application,
                writerScheduler: PipeScheduler.Inline,
                pauseWriterThreshold: options.InputPauseThreshold,
                resumeWriterThreshold: options.InputPauseThreshold == 0 ? 0 : options.InputResumeThreshold,
                useSynchronizationContext: false);

            // Output: the application writes, the loop reads (its read continuation runs the pump at once on the loop thread,
            // and only posts to the loop from another thread, so Inline).
            // With the default pool, its segments are the large blocks (16 KiB): a reply of up to that size written at once
            // is one segment, which the pump sends as it is, rather than a 4 KiB block and the rest, which it would first
            // gather into one buffer (a copy more). The blocks are pooled and held only while unsent, so small replies cost
            // the same.
            Output = new PipeOptions(
                pool: options.MemoryPool ?? PipeBlockPool.Instance,
                readerScheduler: PipeScheduler.Inline,
                writerScheduler: application,
                pauseWriterThreshold: options.OutputPauseThreshold,
                resumeWriterThreshold: options.OutputPauseThreshold == 0 ? 0 : options.OutputResumeThreshold,
                minimumSegmentSize: options.MemoryPool is null ? PipeBlockPool.LargeBlockSize : -1,
                useSynchronizationContext: false);
        }

        /// <summary>The settings these were made from (the handler's own copy).</summary>
        public PipeConnectionOptions Options { get; }

        /// <summary>The loop whose thread the schedulers run continuations on (with continuations on the loop).</summary>
        public EventLoop Loop { get; }

        /// <summary>The input pipe's options.</summary>
        public PipeOptions Input { get; }

        /// <summary>The output pipe's options.</summary>
        public PipeOptions Output { get; }
    }
}
