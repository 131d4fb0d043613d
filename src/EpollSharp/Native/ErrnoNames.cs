using System.Globalization;
using E = EpollSharp.Interop.Errno;

namespace EpollSharp.Native;

/// <summary>Names and meanings of the errno values the library reports. The one place errno becomes an exception.</summary>
internal static class ErrnoNames
{
    internal static string NameOf(int errno) => errno switch
    {
        E.EPERM => "EPERM",
        E.ENOENT => "ENOENT",
        E.EINTR => "EINTR",
        E.EBADF => "EBADF",
        E.EAGAIN => "EAGAIN",
        E.ENOMEM => "ENOMEM",
        E.EACCES => "EACCES",
        E.EFAULT => "EFAULT",
        E.EEXIST => "EEXIST",
        E.EINVAL => "EINVAL",
        E.ENFILE => "ENFILE",
        E.EMFILE => "EMFILE",
        E.ENOSPC => "ENOSPC",
        E.EPIPE => "EPIPE",
        E.ELOOP => "ELOOP",
        E.ENOTSOCK => "ENOTSOCK",
        E.EMSGSIZE => "EMSGSIZE",
        E.EOPNOTSUPP => "EOPNOTSUPP",
        E.ENETDOWN => "ENETDOWN",
        E.ENETUNREACH => "ENETUNREACH",
        E.ENETRESET => "ENETRESET",
        E.ECONNABORTED => "ECONNABORTED",
        E.ECONNRESET => "ECONNRESET",
        E.ENOBUFS => "ENOBUFS",
        E.ENOTCONN => "ENOTCONN",
        E.ESHUTDOWN => "ESHUTDOWN",
        E.ETIMEDOUT => "ETIMEDOUT",
        E.ECONNREFUSED => "ECONNREFUSED",
        E.EHOSTDOWN => "EHOSTDOWN",
        E.EHOSTUNREACH => "EHOSTUNREACH",
        E.EBUSY => "EBUSY",
        E.ENOSYS => "ENOSYS",
        E.ETIME => "ETIME",
        E.ECANCELED => "ECANCELED",
        _ => "errno " + errno.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>Builds the exception for a failed call. <paramref name="operation"/> names the call and its arguments.</summary>
    internal static NativeCallException Create(string operation, int errno)
    {
        string meaning = errno switch
        {
            E.EBADF => "a descriptor is not open (or the epoll descriptor is not valid)",
            E.EEXIST => "the descriptor is already registered with this epoll instance",
            E.ENOENT => "the descriptor is not registered with this epoll instance",
            E.EINVAL => "invalid argument: the descriptor is the epoll instance itself, the flags are not valid for this operation (EPOLLEXCLUSIVE only with add), or the event count is not positive",
            E.EPERM => "the descriptor does not support epoll (regular files and directories cannot be polled)",
            E.ENOMEM => "the kernel is out of memory",
            E.ENOSPC => "the per-user limit of epoll watches (/proc/sys/fs/epoll/max_user_watches) was reached",
            E.EMFILE => "the process has no free descriptor (RLIMIT_NOFILE reached)",
            E.ENFILE => "the system-wide limit of open files was reached",
            E.ELOOP => "adding the descriptor would create a loop of nested epoll instances, or nest them too deeply",
            E.EFAULT => "a buffer is outside the process's address space",
            E.EAGAIN => "the operation would block",
            _ => "the call failed",
        };
        return new NativeCallException(
            operation,
            errno,
            string.Format(CultureInfo.InvariantCulture, "{0} failed with {1}: {2}.", operation, NameOf(errno), meaning));
    }
}
