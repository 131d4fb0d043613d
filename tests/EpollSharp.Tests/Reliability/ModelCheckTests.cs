using Xunit.Abstractions;

namespace EpollSharp.Tests.Reliability;

using Backends = EpollSharp.Tests.Util.Backends;

/// <summary>
/// Seeded random sequences of register / change interest / dispose / post / timer add and cancel / peer write /
/// peer close, checked against a simple model: every callback belongs to a live registration, carries readiness the
/// model allows, and comes after the event that caused it; after the loop settles, nothing the model expects is missing.
/// A failure prints the seed and the step; `EPOLLSHARP_MODEL_SEED=N` replays one seed.
/// </summary>
public class ModelCheckTests
{
    private const int Pairs = 6;
    private const int Steps = 300;
    private readonly ITestOutputHelper _output;

    public ModelCheckTests(ITestOutputHelper output) => _output = output;

    public static IEnumerable<object[]> Cases()
    {
        foreach (object[] backend in Backends.All())
        {
            foreach (int seed in new[] { 1, 2, 3, 20261129 })
            {
                yield return new object[] { backend[0], seed };
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Random_operations_match_the_model(EventLoopBackend backend, int seed)
    {
        Backends.SkipUnlessAvailable(backend);
        string? replay = Environment.GetEnvironmentVariable("EPOLLSHARP_MODEL_SEED");
        if (replay is not null)
        {
            seed = int.Parse(replay, System.Globalization.CultureInfo.InvariantCulture);
        }

        var model = new Model();
        var pairs = new SocketPair[Pairs];
        for (int i = 0; i < Pairs; i++)
        {
            pairs[i] = SocketPair.Create();
        }

        var rng = new Random(seed);
        int step = 0;
        string lastOp = "start";
        try
        {
            using var h = new LoopHarness(Backends.CreateLoop(backend, onError: model.Fail));
            for (step = 0; step < Steps; step++)
            {
                int i = rng.Next(Pairs);
                int op = rng.Next(11);
                op = op >= 9 ? op - 9 : op; // registering and changing interest twice as often
                lastOp = Apply(h, model, pairs, i, op, rng);
                h.Settle(iterations: 2, sleepMs: 2);
                h.Invoke(() => model.CheckSettled(pairs));
                model.ThrowIfFailed();
            }

            // Final settle: all timers that were not cancelled fire, all posts ran.
            LoopHarness.WaitUntil(() => h.Invoke(() => model.TimersPending == 0), "every live timer to fire", 10);
            h.Invoke(() => model.CheckSettled(pairs));
            model.ThrowIfFailed();
            Assert.Equal(model.Posted, model.PostsRun);
            _output.WriteLine($"seed {seed}: {Steps} steps, {model.Callbacks} callbacks, {model.PostsRun} posts, {model.TimersFired} timers fired, {model.TimersCancelled} cancelled");
        }
        catch (Exception ex)
        {
            throw new Xunit.Sdk.XunitException($"{backend} seed {seed} failed at step {step} after '{lastOp}' (replay with EPOLLSHARP_MODEL_SEED={seed}): {ex.Message}\n{ex}");
        }
        finally
        {
            foreach (SocketPair p in pairs)
            {
                p.Dispose();
            }
        }
    }

    private static string Apply(LoopHarness h, Model model, SocketPair[] pairs, int i, int op, Random rng)
    {
        Slot slot = model.Slots[i];
        switch (op)
        {
            case 0 when slot.Registration is null:
            {
                var interest = (Interest)rng.Next(4);
                h.Invoke(() =>
                {
                    var state = new RegState(model, i, pairs[i]);
                    slot.Registration = h.Loop.Register(pairs[i].Local, interest, static (r, readiness) => ((RegState)r.State!).OnReady(r, readiness), state);
                    slot.Interest = interest;
                    slot.WritableSeen = false;
                    slot.Generation++;
                    state.Generation = slot.Generation;
                });
                return $"register {i} {interest}";
            }

            case 1 when slot.Registration is not null:
            {
                var interest = (Interest)rng.Next(4);
                h.Invoke(() =>
                {
                    slot.Registration!.ChangeInterest(interest);
                    slot.Interest = interest;
                    slot.WritableSeen = false;
                });
                return $"change {i} {interest}";
            }

            case 2 when slot.Registration is not null:
                h.Invoke(() =>
                {
                    slot.Registration!.Dispose();
                    slot.Registration = null;
                });
                return $"dispose {i}";

            case 3:
            {
                int count = rng.Next(1, 4);
                for (int k = 0; k < count; k++)
                {
                    int id = model.Posted++;
                    h.Loop.Post(static s =>
                    {
                        var (m, id) = ((Model, int))s!;
                        if (id != m.PostsRun)
                        {
                            m.Fail(new InvalidOperationException($"post {id} ran as number {m.PostsRun}"));
                        }

                        m.PostsRun++;
                    }, (model, id));
                }

                return $"post x{count}";
            }

            case 4:
            {
                int delay = rng.Next(0, 20);
                h.Invoke(() =>
                {
                    var timer = h.Loop.Schedule(TimeSpan.FromMilliseconds(delay), static t =>
                    {
                        var m = (Model)t.State!;
                        if (!m.LiveTimers.Remove(t))
                        {
                            m.Fail(new InvalidOperationException("a cancelled or unknown timer fired"));
                        }

                        m.TimersFired++;
                    }, model);
                    model.LiveTimers.Add(timer);
                });
                return $"timer {delay} ms";
            }

            case 5:
                h.Invoke(() =>
                {
                    if (model.LiveTimers.Count > 0)
                    {
                        var timer = model.LiveTimers[rng.Next(model.LiveTimers.Count)];
                        timer.Cancel();
                        model.LiveTimers.Remove(timer);
                        model.TimersCancelled++;
                    }
                });
                return "cancel a timer";

            case 6 or 7 when !slot.PeerClosed:
            {
                int n = rng.Next(1, 2000);
                lock (model)
                {
                    slot.Sent += n;
                }

                pairs[i].Peer.Send(new byte[n]);
                return $"peer {i} writes {n}";
            }

            case 8 when !slot.PeerClosed:
                lock (model)
                {
                    slot.PeerClosed = true;
                }

                pairs[i].Peer.Shutdown(SocketShutdown.Send);
                return $"peer {i} half-closes";

            default:
                return "no-op";
        }
    }

    private sealed class Slot
    {
        public Registration? Registration;
        public Interest Interest;
        public int Generation;
        public long Sent;
        public long Received;
        public bool PeerClosed;
        public bool EofRead;
        public bool WritableSeen;
    }

    private sealed class RegState
    {
        private readonly Model _model;
        private readonly int _index;
        private readonly SocketPair _pair;
        private readonly byte[] _buffer = new byte[65536];

        public RegState(Model model, int index, SocketPair pair)
        {
            _model = model;
            _index = index;
            _pair = pair;
        }

        public int Generation { get; set; }

        public void OnReady(Registration r, Readiness readiness)
        {
            Model m = _model;
            Slot slot = m.Slots[_index];
            m.Callbacks++;
            if (!ReferenceEquals(slot.Registration, r) || r.IsDisposed || slot.Generation != Generation)
            {
                m.Fail(new InvalidOperationException($"callback for pair {_index} reached a registration that is not the live one"));
                return;
            }

            if (readiness == Readiness.None)
            {
                m.Fail(new InvalidOperationException("a callback with no readiness"));
            }

            if ((readiness & (Readiness.Readable | Readiness.ReadClosed)) != 0 && (slot.Interest & Interest.Readable) == 0)
            {
                m.Fail(new InvalidOperationException($"pair {_index}: {readiness} without readable interest ({slot.Interest})"));
            }

            if ((readiness & Readiness.Writable) != 0 && (slot.Interest & Interest.Writable) == 0)
            {
                m.Fail(new InvalidOperationException($"pair {_index}: {readiness} without writable interest ({slot.Interest})"));
            }

            if ((readiness & Readiness.Writable) != 0)
            {
                // Writable stays true: stop asking, or level-triggered it would be reported on every iteration.
                slot.WritableSeen = true;
                r.ChangeInterest(slot.Interest & ~Interest.Writable);
                slot.Interest &= ~Interest.Writable;
            }

            if ((readiness & Readiness.Readable) != 0)
            {
                bool dataExpected;
                lock (m)
                {
                    dataExpected = slot.Sent > slot.Received || slot.PeerClosed;
                }

                if (!dataExpected)
                {
                    m.Fail(new InvalidOperationException($"pair {_index}: Readable before any data or close was sent"));
                }

                while (true)
                {
                    int n = _pair.Local.Receive(_buffer, 0, _buffer.Length, SocketFlags.None, out SocketError error);
                    if (error == SocketError.WouldBlock)
                    {
                        break;
                    }

                    if (error != SocketError.Success)
                    {
                        m.Fail(new InvalidOperationException($"pair {_index}: receive failed with {error}"));
                        break;
                    }

                    if (n == 0)
                    {
                        slot.EofRead = true;
                        break;
                    }

                    lock (m)
                    {
                        slot.Received += n;
                        if (slot.Received > slot.Sent)
                        {
                            m.Fail(new InvalidOperationException($"pair {_index}: received {slot.Received} > sent {slot.Sent}"));
                        }
                    }
                }

                if (slot.EofRead)
                {
                    if (!slot.PeerClosed)
                    {
                        m.Fail(new InvalidOperationException($"pair {_index}: end of stream before the peer closed"));
                    }

                    // End of stream stays readable: stop asking for it.
                    r.ChangeInterest(Interest.None);
                    slot.Interest = Interest.None;
                }
            }
        }
    }

    private sealed class Model
    {
        private Exception? _failure;

        public Model()
        {
            for (int i = 0; i < Slots.Length; i++)
            {
                Slots[i] = new Slot();
            }
        }

        public Slot[] Slots { get; } = new Slot[Pairs];

        public List<LoopTimer> LiveTimers { get; } = new();

        public int TimersPending => LiveTimers.Count;

        public int Posted;
        public int PostsRun;
        public int TimersFired;
        public int TimersCancelled;
        public long Callbacks;

        public void Fail(Exception ex) => _failure ??= ex;

        public void ThrowIfFailed()
        {
            if (_failure is not null)
            {
                throw new InvalidOperationException(_failure.Message, _failure);
            }
        }

        /// <summary>On the loop thread after settling: what the model expects has happened.</summary>
        public void CheckSettled(SocketPair[] pairs)
        {
            for (int i = 0; i < Slots.Length; i++)
            {
                Slot s = Slots[i];
                if (s.Registration is null)
                {
                    continue;
                }

                lock (this)
                {
                    if ((s.Interest & Interest.Readable) != 0 && s.Received < s.Sent)
                    {
                        Fail(new InvalidOperationException($"pair {i}: {s.Sent - s.Received} bytes sent but never delivered as Readable"));
                    }

                    if ((s.Interest & Interest.Readable) != 0 && s.PeerClosed && !s.EofRead)
                    {
                        Fail(new InvalidOperationException($"pair {i}: the peer's close was never delivered"));
                    }
                }

                if ((s.Interest & Interest.Writable) != 0)
                {
                    Fail(new InvalidOperationException($"pair {i}: writable interest but no Writable callback"));
                }
            }
        }
    }
}
