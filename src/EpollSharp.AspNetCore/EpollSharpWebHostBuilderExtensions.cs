using System;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace EpollSharp.AspNetCore;

/// <summary>Puts Kestrel on the EpollSharp transport.</summary>
public static class EpollSharpWebHostBuilderExtensions
{
    /// <summary>
    /// Makes Kestrel accept and serve its TCP and Unix domain socket endpoints on EpollSharp event loops
    /// (<see cref="EpollSharpTransportFactory"/>) instead of the socket transport. With a <c>WebApplicationBuilder</c>:
    /// <c>builder.WebHost.UseEpollSharp(o =&gt; o.LoopCount = 2)</c>. Kestrel's own options (limits, timeouts, HTTPS,
    /// protocols) are unchanged; endpoints this transport cannot bind (a named pipe, a socket handle) go to the next
    /// registered transport.
    /// </summary>
    /// <param name="builder">The web host builder.</param>
    /// <param name="configure">Sets the transport's options; <see langword="null"/> for the defaults. Runs when Kestrel creates the transport, where the options are then checked.</param>
    /// <returns><paramref name="builder"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="builder"/> is null.</exception>
    public static IWebHostBuilder UseEpollSharp(this IWebHostBuilder builder, Action<EpollSharpTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.ConfigureServices(services =>
        {
            // Kestrel asks the transports registered last first: this one goes before the socket transport.
            services.AddSingleton<EpollSharpTransportFactory>();
            services.AddSingleton<IConnectionListenerFactory>(sp => sp.GetRequiredService<EpollSharpTransportFactory>());
            services.AddOptions<EpollSharpTransportOptions>();
            if (configure is not null)
            {
                services.Configure(configure);
            }
        });
    }
}
