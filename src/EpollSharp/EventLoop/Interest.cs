using System;

namespace EpollSharp;

/// <summary>The readiness a registration asks to be told about.</summary>
[Flags]
public enum Interest
{
    /// <summary>
    /// No readiness: only <see cref="Readiness.Closed"/> and <see cref="Readiness.Error"/> are delivered
    /// (they cannot be switched off).
    /// </summary>
    None = 0,

    /// <summary>Tell me when the handle is readable (data, a pending connection, or end of stream).</summary>
    Readable = 1,

    /// <summary>Tell me when the handle is writable (room in the send buffer, or a connect completed).</summary>
    Writable = 2,

    /// <summary>Both <see cref="Readable"/> and <see cref="Writable"/>.</summary>
    ReadWrite = Readable | Writable,
}
