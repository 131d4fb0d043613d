using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;
using EpollSharp.Connections;
using Microsoft.Extensions.Options;

namespace EpollSharp.Hosting;

/// <summary>
/// Checks <see cref="EpollSharpServerOptions"/> when they are first read (at the host's start, through ValidateOnStart),
/// naming each bad setting by its configuration key when the options were bound from a section.
/// </summary>
internal sealed class EpollSharpServerOptionsValidator : IValidateOptions<EpollSharpServerOptions>
{
    private static readonly TimeSpan MaxTimeout = TimeSpan.FromDays(3650);
    private readonly string _prefix;

    /// <param name="configurationPath">The path of the section the options were bound from, or <see langword="null"/>.</param>
    public EpollSharpServerOptionsValidator(string? configurationPath)
    {
        _prefix = string.IsNullOrEmpty(configurationPath) ? nameof(EpollSharpServerOptions) + "." : configurationPath + ":";
    }

    public ValidateOptionsResult Validate(string? name, EpollSharpServerOptions options)
    {
        var failures = new List<string>();
        void Fail(string setting, object? value, string rule) =>
            failures.Add(string.Format(CultureInfo.InvariantCulture, "{0}{1} is {2}: {3}", _prefix, setting, value is null ? "null" : "'" + Convert.ToString(value, CultureInfo.InvariantCulture) + "'", rule));

        if (options.Loops is < 0 or > 4096)
        {
            Fail(nameof(options.Loops), options.Loops, "it must be 0 (one loop per processor) or from 1 to 4096.");
        }

        if (!Enum.IsDefined(options.Backend))
        {
            Fail(nameof(options.Backend), options.Backend, "it must be one of Auto, Epoll, Kqueue, Managed.");
        }

        if (!Enum.IsDefined(options.AcceptMode))
        {
            Fail(nameof(options.AcceptMode), options.AcceptMode, "it must be one of Auto, ReusePort, SingleAcceptor.");
        }

        if (options.TriggerMode is not (TriggerMode.Level or TriggerMode.Edge))
        {
            Fail(nameof(options.TriggerMode), options.TriggerMode, "it must be Level or Edge.");
        }

        if (options.MaxConnections < 0)
        {
            Fail(nameof(options.MaxConnections), options.MaxConnections, "it must be 0 (derived from the descriptor limit) or positive.");
        }

        if (options.IdleTimeout != Timeout.InfiniteTimeSpan && (options.IdleTimeout < TimeSpan.Zero || options.IdleTimeout > MaxTimeout))
        {
            Fail(nameof(options.IdleTimeout), options.IdleTimeout, "it must be positive and at most 3650 days, or 00:00:00 (off).");
        }

        if (options.DrainTimeout != Timeout.InfiniteTimeSpan && (options.DrainTimeout < TimeSpan.Zero || options.DrainTimeout > MaxTimeout))
        {
            Fail(nameof(options.DrainTimeout), options.DrainTimeout, "it must be zero or positive and at most 3650 days.");
        }

        if (options.CallbackBudget is TimeSpan budget && budget != TimeSpan.Zero && budget != Timeout.InfiniteTimeSpan
            && (budget < TimeSpan.FromMilliseconds(1) || budget > TimeSpan.FromHours(1)))
        {
            Fail(nameof(options.CallbackBudget), budget, "it must be from 00:00:00.001 to 01:00:00, or 00:00:00 (off).");
        }

        for (int i = 0; i < options.Endpoints.Count; i++)
        {
            if (!EndpointParser.TryParse(options.Endpoints[i], out _, out string? error))
            {
                failures.Add(_prefix + nameof(options.Endpoints) + ":" + i.ToString(CultureInfo.InvariantCulture) + " " + error + ".");
            }
        }

        if (options.Endpoints.Count == 0 && !options.SocketActivation)
        {
            failures.Add(_prefix + nameof(options.Endpoints) + " is empty: give at least one endpoint (" + EndpointParser.Forms + "), or set " + _prefix + nameof(options.SocketActivation) + " to true.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
