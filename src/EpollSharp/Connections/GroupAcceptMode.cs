namespace EpollSharp.Connections;

/// <summary>How an <see cref="EventLoopGroup"/> spreads new connections over its loops.</summary>
public enum GroupAcceptMode
{
    /// <summary><see cref="ReusePort"/> on Linux when the group has more than one loop and the endpoint is an IP endpoint; otherwise <see cref="SingleAcceptor"/>.</summary>
    Auto = 0,

    /// <summary>
    /// One listening socket per loop, all bound to the same port with <c>SO_REUSEPORT</c>; the kernel spreads connections
    /// among them (by a hash of the addresses), and no connection crosses threads. Linux and IP endpoints only. The group
    /// binds its first socket without the option, so an address that anyone already listens on fails with address-in-use;
    /// once the group listens, though, any process of the same user that sets <c>SO_REUSEPORT</c> can still join the port
    /// and take a share of its connections (that is what the option is for). <see cref="ListenerOptions.ReusePort"/> asks
    /// for that sharing from the start.
    /// </summary>
    ReusePort = 1,

    /// <summary>One listening socket on the first loop; it accepts and hands each connection to the next loop in turn (through <see cref="EventLoop.Post(System.Action{object?}, object?)"/>). Works everywhere.</summary>
    SingleAcceptor = 2,
}
