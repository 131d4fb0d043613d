using System.Globalization;
using EpollSharp.Native;
using E = EpollSharp.Interop.Errno;

namespace EpollSharp.Backends;

/// <summary>
/// The exceptions of failed kqueue calls, with kqueue's meaning of each errno (<see cref="ErrnoNames.Create"/> words
/// them for epoll). Names come from <see cref="ErrnoNames"/>, whose values are Linux's: on macOS and FreeBSD they
/// agree below 35 (every errno kqueue and kevent report in practice), so a larger value is printed as a number there.
/// </summary>
internal static class KqueueErrors
{
    internal static NativeCallException Create(string operation, int errno)
    {
        string meaning = errno switch
        {
            E.EBADF => "a descriptor is not open (the watched one, or the kqueue itself)",
            E.ENOENT => "the event to change or delete is not registered",
            E.EINVAL => "invalid argument: the filter is not supported for this descriptor, or a flag or the timeout is not valid",
            E.ENOMEM => "no memory to register the event",
            E.EMFILE => "the process has no free descriptor (RLIMIT_NOFILE reached)",
            E.ENFILE => "the system-wide limit of open files was reached",
            E.EACCES => "the process may not watch this descriptor",
            E.EFAULT => "a buffer is outside the process's address space",
            _ => "the call failed",
        };
        return new NativeCallException(
            operation,
            errno,
            string.Format(CultureInfo.InvariantCulture, "{0} failed with {1}: {2}.", operation, NameOf(errno), meaning));
    }

    private static string NameOf(int errno) =>
        errno < 35 || Platform.IsLinux ? ErrnoNames.NameOf(errno) : "errno " + errno.ToString(CultureInfo.InvariantCulture);
}
