#if !EPOLLSHARP_NETSTANDARD2_0
using System.Runtime.InteropServices;
using EpollSharp.Tests.Connections;

namespace EpollSharp.Tests.Native;

using TcpPair = EpollSharp.Tests.Util.SocketPair;

/// <summary>
/// The connection layer's direct <c>recv</c>/<c>send</c>: the same bytes and the same <see cref="SocketError"/> values as
/// <see cref="Socket"/>'s own calls in each situation, checked side by side on two identical socket pairs.
/// </summary>
public class SocketIoTests
{
    [Fact]
    public void IsUsedOnLinux()
    {
        Assert.Equal(OperatingSystem.IsLinux(), SocketIo.IsSupported);
    }

    [SkippableFact]
    public void Receives_what_the_peer_sent_and_reports_WouldBlock_when_empty_like_Socket()
    {
        Skip.IfNot(SocketIo.IsSupported, "direct socket calls are Linux only");
        using TcpPair pair = TcpPair.Create();
        var buffer = new byte[64];

        Assert.Equal(0, SocketIo.Receive(pair.Local.SafeHandle, buffer, out SocketError error));
        Assert.Equal(SocketError.WouldBlock, error);
        pair.Local.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError dotnetError);
        Assert.Equal(dotnetError, error);

        pair.Peer.Send(new byte[] { 1, 2, 3, 4, 5 });
        WaitReadable(pair.Local);
        Assert.Equal(3, SocketIo.Receive(pair.Local.SafeHandle, buffer.AsSpan(0, 3), out error));
        Assert.Equal(SocketError.Success, error);
        Assert.Equal(new byte[] { 1, 2, 3 }, buffer[..3]);
        Assert.Equal(2, SocketIo.Receive(pair.Local.SafeHandle, buffer, out error));
        Assert.Equal(new byte[] { 4, 5 }, buffer[..2]);

        pair.Peer.Shutdown(SocketShutdown.Send);
        WaitReadable(pair.Local);
        Assert.Equal(0, SocketIo.Receive(pair.Local.SafeHandle, buffer, out error));
        Assert.Equal(SocketError.Success, error);
    }

    [SkippableFact]
    public void Sends_until_the_kernel_buffer_is_full_then_reports_WouldBlock_like_Socket()
    {
        Skip.IfNot(SocketIo.IsSupported, "direct socket calls are Linux only");
        using TcpPair pair = TcpPair.Create();
        byte[] data = SocketTestExtensions.Pattern(3, 64 * 1024);
        long total = 0;
        SocketError error;
        while (true)
        {
            int n = SocketIo.Send(pair.Local.SafeHandle, data, out error);
            total += n;
            if (error != SocketError.Success)
            {
                break;
            }

            Assert.True(n > 0, "a send that succeeds takes some bytes");
            Assert.True(total < 256L * 1024 * 1024, "the send buffer never filled");
        }

        Assert.Equal(SocketError.WouldBlock, error);
        pair.Local.Send(data, SocketFlags.None, out SocketError dotnetError);
        Assert.Equal(dotnetError, error);

        // Every byte sent arrives, in order.
        var received = new byte[64 * 1024];
        long got = 0;
        while (got < total)
        {
            int n = pair.Peer.Receive(received, 0, (int)Math.Min(received.Length, total - got), SocketFlags.None);
            Assert.True(n > 0);
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(data[(int)((got + i) % data.Length)], received[i]);
            }

            got += n;
        }
    }

    [SkippableFact]
    public void A_reset_reports_ConnectionReset_like_Socket()
    {
        Skip.IfNot(SocketIo.IsSupported, "direct socket calls are Linux only");
        using TcpPair direct = TcpPair.Create();
        using TcpPair dotnet = TcpPair.Create();
        direct.ResetPeer();
        dotnet.ResetPeer();
        WaitReadable(direct.Local);
        WaitReadable(dotnet.Local);
        var buffer = new byte[16];

        SocketIo.Receive(direct.Local.SafeHandle, buffer, out SocketError error);
        dotnet.Local.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError dotnetError);
        Assert.Equal(SocketError.ConnectionReset, error);
        Assert.Equal(dotnetError, error);
    }

    [SkippableFact]
    public void A_send_after_shutting_down_output_reports_Shutdown_like_Socket_and_raises_no_SIGPIPE()
    {
        Skip.IfNot(SocketIo.IsSupported, "direct socket calls are Linux only");
        using TcpPair direct = TcpPair.Create();
        using TcpPair dotnet = TcpPair.Create();
        direct.Local.Shutdown(SocketShutdown.Send);
        dotnet.Local.Shutdown(SocketShutdown.Send);

        // EPIPE (MSG_NOSIGNAL: the process would otherwise get SIGPIPE, whatever the runtime does with it)
        Assert.Equal(0, SocketIo.Send(direct.Local.SafeHandle, new byte[] { 1 }, out SocketError error));
        dotnet.Local.Send(new byte[] { 1 }, SocketFlags.None, out SocketError dotnetError);
        Assert.Equal(SocketError.Shutdown, error);
        Assert.Equal(dotnetError, error);
    }

    [SkippableFact]
    public void A_closed_socket_throws_ObjectDisposedException_and_its_number_is_never_used()
    {
        Skip.IfNot(SocketIo.IsSupported, "direct socket calls are Linux only");
        TcpPair pair = TcpPair.Create();
        SafeHandle handle = pair.Local.SafeHandle;
        pair.Dispose();

        // A new socket likely takes the same descriptor number; the closed handle must not reach it.
        using TcpPair other = TcpPair.Create();
        other.Peer.Send(new byte[] { 9 });
        Assert.Throws<ObjectDisposedException>(() => SocketIo.Receive(handle, new byte[4], out _));
        Assert.Throws<ObjectDisposedException>(() => SocketIo.Send(handle, new byte[] { 1 }, out _));
        WaitReadable(other.Local);
        Assert.Equal(1, other.Local.Available);
    }

    [Theory]
    [InlineData(11, SocketError.WouldBlock)]
    [InlineData(104, SocketError.ConnectionReset)]
    [InlineData(32, SocketError.Shutdown)]
    [InlineData(103, SocketError.ConnectionAborted)]
    [InlineData(110, SocketError.TimedOut)]
    [InlineData(107, SocketError.NotConnected)]
    [InlineData(113, SocketError.HostUnreachable)]
    [InlineData(9, SocketError.OperationAborted)]
    [InlineData(105, SocketError.NoBufferSpaceAvailable)]
    [InlineData(4, SocketError.Interrupted)]
    [InlineData(9999, SocketError.SocketError)]
    public void Errno_values_map_to_the_SocketError_that_Socket_reports(int errno, SocketError expected)
    {
        Assert.Equal(expected, SocketIo.ToSocketError(errno));
    }

    private static void WaitReadable(Socket socket)
    {
        Assert.True(socket.Poll(5_000_000, SelectMode.SelectRead), "the socket did not become readable within 5 s");
        Thread.Sleep(10);
    }
}
#endif
