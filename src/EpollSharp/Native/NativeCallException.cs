using System;
using System.IO;

namespace EpollSharp.Native;

/// <summary>
/// A native call failed. Carries the <c>errno</c> value, its symbolic name and the operation that failed,
/// so that callers can act on a specific error without parsing the message.
/// </summary>
public sealed class NativeCallException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="operation">The failed call, e.g. <c>epoll_ctl(EPOLL_CTL_ADD, fd 7)</c>.</param>
    /// <param name="errno">The <c>errno</c> value.</param>
    /// <param name="message">The explanation shown to the user.</param>
    public NativeCallException(string operation, int errno, string message)
        : base(message, errno)
    {
        Operation = operation ?? throw new ArgumentNullException(nameof(operation));
        Errno = errno;
    }

    /// <summary>The <c>errno</c> value the call set (platform-specific; Linux values on Linux).</summary>
    public int Errno { get; }

    /// <summary>The symbolic name of <see cref="Errno"/>, such as <c>EEXIST</c>.</summary>
    public string ErrorName => ErrnoNames.NameOf(Errno);

    /// <summary>The native call that failed, with its relevant arguments.</summary>
    public string Operation { get; }
}
