using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using EpollSharp.Native;

namespace EpollSharp.Connections;

/// <summary>
/// The file a listener's Unix domain socket is bound to: a stale one is removed before binding, the mode is set after
/// binding, and the file is removed when the listener stops, if it is still the one the listener created. A file is
/// known by its device and inode numbers and its birth time (its change time where the file system keeps no birth time),
/// read with <c>statx</c>: a file that someone else put at the path after the bind (a new server that removed ours and
/// bound again, say) differs in one of them and is left alone. Inode numbers are reused at once after a removal, hence the
/// time; file times advance by the kernel's clock tick (a few milliseconds), so a replacement made within the same tick
/// that also got the same inode number cannot be told apart. Linux only: on other
/// systems a stale file is not removed (binding then fails with address-in-use), the mode cannot be set, and the file
/// stays after the listener stops.
/// </summary>
internal sealed class UnixSocketFile
{
    private readonly Identity _identity;

    private UnixSocketFile(string path, Identity identity)
    {
        Path = path;
        _identity = identity;
    }

    /// <summary>The full path of the file.</summary>
    internal string Path { get; }

    /// <summary>
    /// The file-system path of a Unix domain socket endpoint; <see langword="null"/> for an abstract name (its first byte
    /// is NUL: <c>new UnixDomainSocketEndPoint("\0name")</c>) and an unnamed endpoint, which have no file.
    /// </summary>
    internal static string? PathOf(EndPoint endPoint)
    {
        // The sockaddr_un: two bytes of family, then sun_path. Read through Serialize, which every build has.
        SocketAddress address = endPoint.Serialize();
        const int PathOffset = 2;
        if (address.Size <= PathOffset || address[PathOffset] == 0)
        {
            return null;
        }

        int end = PathOffset;
        while (end < address.Size && address[end] != 0)
        {
            end++;
        }

        byte[] bytes = new byte[end - PathOffset];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = address[PathOffset + i];
        }

        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>
    /// Before binding <paramref name="endPoint"/>, whose file is <paramref name="path"/>: when a socket file is there and connecting to it is refused (no one listens),
    /// removes it. When someone listens, or the file cannot be probed, leaves it, and binding fails with address-in-use.
    /// </summary>
    /// <exception cref="IOException">Something other than a socket is at the path (it is left as it is).</exception>
    internal static void RemoveIfStale(EndPoint endPoint, string path)
    {
        if (!Platform.IsLinux || !TryStat(path, out int mode, out _))
        {
            // Nothing there (or no way to tell what is): binding decides.
            return;
        }

        if ((mode & Interop.Sys.S_IFMT) != Interop.Sys.S_IFSOCK)
        {
            throw new IOException("Cannot listen on the Unix domain socket path '" + path + "': a file that is not a socket is there (" + TypeName(mode) + "). The listener removes a stale socket file only; remove or move the file, or choose another path.");
        }

        // A non-blocking probe: accepted (or queued: EAGAIN when the backlog is full) means someone listens.
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { Blocking = false })
        {
            try
            {
                probe.Connect(endPoint);
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                // No one listens: the file was left by a server that stopped without removing it.
            }
            catch (SocketException)
            {
                return;
            }
        }

        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Binding will fail with address-in-use, which says what the user needs to know.
        }
    }

    /// <summary>
    /// After binding (and setting the mode, which changes the change time): the file just created at <paramref name="path"/>;
    /// <see langword="null"/> where files cannot be told apart.
    /// </summary>
    internal static UnixSocketFile? AfterBind(string path)
    {
        string fullPath = System.IO.Path.GetFullPath(path);
        return Platform.IsLinux && TryStat(fullPath, out int mode, out Identity identity) && (mode & Interop.Sys.S_IFMT) == Interop.Sys.S_IFSOCK
            ? new UnixSocketFile(fullPath, identity)
            : null;
    }

    /// <summary>
    /// A <see cref="EndPoint"/> that binds where <paramref name="endPoint"/> does, but that .NET's <see cref="Socket"/> does not
    /// know for a <c>UnixDomainSocketEndPoint</c>: bound through one, a socket's <c>Dispose</c> does not delete the path
    /// (.NET deletes whatever file is there, even one that another server has put there since), so the listener decides.
    /// </summary>
    internal static EndPoint ForBind(EndPoint endPoint) => new BindEndPoint(endPoint);

    /// <summary>Sets the permission bits of the file (<c>chmod</c>).</summary>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    /// <exception cref="IOException"><c>chmod</c> failed.</exception>
    internal static void SetMode(string path, int mode)
    {
        Platform.ThrowIfNotLinux("ListenerOptions.UnixSocketMode");
        byte[] bytes = NullTerminated(path);
        int result;
        unsafe
        {
            fixed (byte* p = bytes)
            {
                result = Interop.Sys.chmod(p, (uint)mode);
            }
        }

        if (result != 0)
        {
            int errno = Interop.Errno.Last();
            throw new IOException("Setting the mode of the Unix domain socket file '" + path + "' to " + Convert.ToString(mode, 8) + " (octal) failed: " + ErrnoNames.NameOf(errno) + ".");
        }
    }

    /// <summary>Removes the file if it is still the one created at bind. Never throws: a file that cannot be removed stays.</summary>
    internal void DeleteIfSame()
    {
        if (!TryStat(Path, out int mode, out Identity identity)
            || (mode & Interop.Sys.S_IFMT) != Interop.Sys.S_IFSOCK || !identity.Equals(_identity))
        {
            return;
        }

        try
        {
            File.Delete(Path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The directory is not ours to write any more: the file stays, as it would after a crash.
        }
    }

    /// <summary><c>statx</c> without following a final symbolic link; false when the path cannot be described (absent, say).</summary>
    private static bool TryStat(string path, out int mode, out Identity identity)
    {
        mode = 0;
        identity = default;
        byte[] bytes = NullTerminated(path);
        unsafe
        {
            byte* buffer = stackalloc byte[Interop.Sys.StatxSize];
            int result;
            fixed (byte* p = bytes)
            {
                try
                {
                    result = Interop.Sys.statx(Interop.Sys.AT_FDCWD, p, Interop.Sys.AT_SYMLINK_NOFOLLOW, Interop.Sys.STATX_TYPE_CTIME_INO_BTIME, buffer);
                }
                catch (EntryPointNotFoundException)
                {
                    // A C library older than statx (glibc before 2.28, musl before 1.2.5).
                    return false;
                }
            }

            if (result != 0)
            {
                return false;
            }

            mode = *(ushort*)(buffer + Interop.Sys.StatxModeOffset);
            bool hasBirthTime = (*(uint*)(buffer + Interop.Sys.StatxMaskOffset) & Interop.Sys.STATX_BTIME) != 0;
            byte* time = buffer + (hasBirthTime ? Interop.Sys.StatxBtimeOffset : Interop.Sys.StatxCtimeOffset);
            identity = new Identity(
                ((ulong)*(uint*)(buffer + Interop.Sys.StatxDevMajorOffset) << 32) | *(uint*)(buffer + Interop.Sys.StatxDevMinorOffset),
                *(ulong*)(buffer + Interop.Sys.StatxInoOffset),
                *(long*)time,
                *(uint*)(time + sizeof(long)));
            return true;
        }
    }

    private static byte[] NullTerminated(string path)
    {
        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(path) + 1];
        Encoding.UTF8.GetBytes(path, 0, path.Length, bytes, 0);
        return bytes;
    }

    private static string TypeName(int mode) => (mode & Interop.Sys.S_IFMT) switch
    {
        0x8000 => "a regular file",
        0x4000 => "a directory",
        0xA000 => "a symbolic link",
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x6000 => "a block device",
        _ => "file type 0" + Convert.ToString((mode & Interop.Sys.S_IFMT) >> 12, 8),
    };

    /// <summary>What tells one file from another: device, inode, and birth time (or change time), seconds and nanoseconds.</summary>
    private readonly struct Identity : IEquatable<Identity>
    {
        private readonly ulong _device;
        private readonly ulong _inode;
        private readonly long _seconds;
        private readonly uint _nanoseconds;

        internal Identity(ulong device, ulong inode, long seconds, uint nanoseconds)
        {
            _device = device;
            _inode = inode;
            _seconds = seconds;
            _nanoseconds = nanoseconds;
        }

        public bool Equals(Identity other) => _device == other._device && _inode == other._inode && _seconds == other._seconds && _nanoseconds == other._nanoseconds;

        public override bool Equals(object? obj) => obj is Identity other && Equals(other);

        public override int GetHashCode() => HashCode.Combine(_device, _inode, _seconds, _nanoseconds);
    }

    private sealed class BindEndPoint : EndPoint
    {
        private readonly EndPoint _inner;

        internal BindEndPoint(EndPoint inner) => _inner = inner;

        public override AddressFamily AddressFamily => _inner.AddressFamily;

        public override SocketAddress Serialize() => _inner.Serialize();

        public override EndPoint Create(SocketAddress socketAddress) => _inner.Create(socketAddress);

        public override string ToString() => _inner.ToString() ?? string.Empty;
    }
}
