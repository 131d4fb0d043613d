using System;
using System.Diagnostics.CodeAnalysis;
using EpollSharp.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace EpollSharp.Hosting;

/// <summary>Registers an <see cref="EpollSharpServer"/> with a host's services.</summary>
/// <example>
/// <code>
/// HostApplicationBuilder builder = Host.CreateApplicationBuilder(args);
/// builder.Services.AddEpollSharpServer&lt;EchoHandler&gt;(builder.Configuration.GetSection(EpollSharpServerOptions.SectionName));
/// builder.Services.Configure&lt;EpollSharpServerOptions&gt;(options =&gt; options.ConfigureListener = listener =&gt; listener.Backlog = 4096);
/// builder.Build().Run();
/// </code>
/// </example>
public static class EpollSharpServiceCollectionExtensions
{
    /// <summary>
    /// Adds an EpollSharp server whose connections <typeparamref name="THandler"/> handles (a singleton resolved from the
    /// services, added as one unless registered already), with options set in code.
    /// </summary>
    /// <typeparam name="THandler">The connection handler; one instance serves every loop, on several threads at once.</typeparam>
    /// <param name="services">The host's services.</param>
    /// <param name="configure">Sets the options (the defaults listen nowhere: add an endpoint).</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="configure"/> is null.</exception>
    /// <exception cref="InvalidOperationException">An EpollSharp server was added to these services already.</exception>
    public static IServiceCollection AddEpollSharpServer<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        this IServiceCollection services, Action<EpollSharpServerOptions> configure)
        where THandler : ConnectionHandler
    {
        ThrowIfNull(services, nameof(services));
        ThrowIfNull(configure, nameof(configure));
        services.TryAddSingleton<THandler>();
        return Add(services, static provider => provider.GetRequiredService<THandler>(), configuration: null, configure);
    }

    /// <summary>
    /// Adds an EpollSharp server whose connections <typeparamref name="THandler"/> handles (a singleton resolved from the
    /// services, added as one unless registered already), with options bound from <paramref name="configuration"/>, usually
    /// <c>builder.Configuration.GetSection("EpollSharp")</c>: <c>appsettings.json</c>, environment variables
    /// (<c>EpollSharp__Loops=4</c>) and the command line (<c>--EpollSharp:Loops=4</c>), as the host reads them. To change
    /// what was bound in code, add <c>services.Configure&lt;EpollSharpServerOptions&gt;(options =&gt; ...)</c> after this call.
    /// </summary>
    /// <typeparam name="THandler">The connection handler; one instance serves every loop, on several threads at once.</typeparam>
    /// <param name="services">The host's services.</param>
    /// <param name="configuration">The section holding the settings of <see cref="EpollSharpServerOptions"/>.</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="configuration"/> is null.</exception>
    /// <exception cref="InvalidOperationException">An EpollSharp server was added to these services already.</exception>
    public static IServiceCollection AddEpollSharpServer<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        this IServiceCollection services, IConfiguration configuration)
        where THandler : ConnectionHandler
    {
        ThrowIfNull(services, nameof(services));
        ThrowIfNull(configuration, nameof(configuration));
        services.TryAddSingleton<THandler>();
        return Add(services, static provider => provider.GetRequiredService<THandler>(), configuration, configure: null);
    }

    /// <summary>
    /// Adds an EpollSharp server whose handler <paramref name="handlerFactory"/> creates, once, when the server is first
    /// resolved. Set the options with <c>services.Configure&lt;EpollSharpServerOptions&gt;(options =&gt; ...)</c>.
    /// </summary>
    /// <param name="services">The host's services.</param>
    /// <param name="handlerFactory">Creates the connection handler (one instance serves every loop, on several threads at once).</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="handlerFactory"/> is null.</exception>
    /// <exception cref="InvalidOperationException">An EpollSharp server was added to these services already.</exception>
    public static IServiceCollection AddEpollSharpServer(this IServiceCollection services, Func<IServiceProvider, ConnectionHandler> handlerFactory)
    {
        ThrowIfNull(services, nameof(services));
        ThrowIfNull(handlerFactory, nameof(handlerFactory));
        return Add(services, handlerFactory, configuration: null, configure: null);
    }

    /// <summary>
    /// Adds an EpollSharp server whose handler <paramref name="handlerFactory"/> creates, once, when the server is first
    /// resolved, with options bound from <paramref name="configuration"/> (as
    /// <see cref="AddEpollSharpServer{THandler}(IServiceCollection, IConfiguration)"/> binds them).
    /// </summary>
    /// <param name="services">The host's services.</param>
    /// <param name="handlerFactory">Creates the connection handler (one instance serves every loop, on several threads at once).</param>
    /// <param name="configuration">The section holding the settings of <see cref="EpollSharpServerOptions"/>.</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="InvalidOperationException">An EpollSharp server was added to these services already.</exception>
    public static IServiceCollection AddEpollSharpServer(this IServiceCollection services, Func<IServiceProvider, ConnectionHandler> handlerFactory, IConfiguration configuration)
    {
        ThrowIfNull(services, nameof(services));
        ThrowIfNull(handlerFactory, nameof(handlerFactory));
        ThrowIfNull(configuration, nameof(configuration));
        return Add(services, handlerFactory, configuration, configure: null);
    }

    private static IServiceCollection Add(
        IServiceCollection services,
        Func<IServiceProvider, ConnectionHandler> handlerFactory,
        IConfiguration? configuration,
        Action<EpollSharpServerOptions>? configure)
    {
        foreach (ServiceDescriptor descriptor in services)
        {
            if (descriptor.ServiceType == typeof(EpollSharpServer))
            {
                throw new InvalidOperationException("An EpollSharp server was added to these services already; a host runs one (give it several endpoints).");
            }
        }

        OptionsBuilder<EpollSharpServerOptions> options = services.AddOptions<EpollSharpServerOptions>();
        if (configuration is not null)
        {
            // Intercepted by the binder's source generator: no reflection, nothing for the trimmer to warn about.
            options.Bind(configuration);
        }

        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.AddSingleton<IValidateOptions<EpollSharpServerOptions>>(new EpollSharpServerOptionsValidator((configuration as IConfigurationSection)?.Path));
        services.AddSingleton(provider => new EpollSharpServer(
            provider.GetRequiredService<IOptions<EpollSharpServerOptions>>(),
            handlerFactory(provider) ?? throw new InvalidOperationException("The handler factory of the EpollSharp server returned null."),
            provider.GetService<IHostApplicationLifetime>(),
            provider.GetService<ILoggerFactory>()));
        services.AddHostedService(static provider => provider.GetRequiredService<EpollSharpServer>());
        return services;
    }

    private static void ThrowIfNull(object? value, string name)
    {
        if (value is null)
        {
            throw new ArgumentNullException(name);
        }
    }
}
