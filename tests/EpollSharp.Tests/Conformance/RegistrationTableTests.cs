using EpollSharp.Native;

namespace EpollSharp.Tests.Conformance;

/// <summary>The loop's token table on its own: slots, the generation rule, lookups of stale tokens, growth and closing.</summary>
public class RegistrationTableTests
{
    [Fact]
    public void A_freed_slot_is_reused_with_a_new_generation_and_the_old_token_finds_nothing()
    {
        using var loop = new EventLoop();
        using EventFdHandle handle = EventFdHandle.Create();
        var table = new RegistrationTable();
        Registration first = NewRegistration(loop, handle);
        table.Allocate(first);
        ulong firstToken = first.Token;
        Assert.NotEqual(0u, (uint)(firstToken >> 32));
        Assert.Same(first, table.Find(firstToken));

        table.Free(first);
        Assert.Null(table.Find(firstToken));
        Registration second = NewRegistration(loop, handle);
        table.Allocate(second);
        Assert.Equal((uint)firstToken, (uint)second.Token);
        Assert.NotEqual(firstToken >> 32, second.Token >> 32);
        Assert.Null(table.Find(firstToken));
        Assert.Same(second, table.Find(second.Token));
        Assert.Equal(1, table.Count);

        table.Free(first); // not in the table any more: nothing happens
        Assert.Equal(1, table.Count);
        Assert.Null(table.Find(ulong.MaxValue));
    }

    [Fact]
    public void Growing_keeps_every_live_registration_findable()
    {
        using var loop = new EventLoop();
        using EventFdHandle handle = EventFdHandle.Create();
        var table = new RegistrationTable();
        var registrations = new Registration[300];
        for (int i = 0; i < registrations.Length; i++)
        {
            registrations[i] = NewRegistration(loop, handle);
            table.Allocate(registrations[i]);
        }

        Assert.Equal(registrations.Length, table.Count);
        foreach (Registration registration in registrations)
        {
            Assert.Same(registration, table.Find(registration.Token));
        }
    }

    [Fact]
    public void Closing_returns_the_live_registrations_and_refuses_new_ones()
    {
        using var loop = new EventLoop();
        using EventFdHandle handle = EventFdHandle.Create();
        var table = new RegistrationTable();
        Registration kept = NewRegistration(loop, handle);
        Registration freed = NewRegistration(loop, handle);
        table.Allocate(kept);
        table.Allocate(freed);
        table.Free(freed);

        Registration?[] left = table.Close();
        Assert.Contains(kept, left);
        Assert.DoesNotContain(freed, left);
        Assert.Throws<ObjectDisposedException>(() => table.Allocate(NewRegistration(loop, handle)));
    }

    private static Registration NewRegistration(EventLoop loop, EventFdHandle handle) =>
        new(loop, handle, null, Interest.Readable, TriggerMode.Level, static (_, _) => { }, null);
}
