using System.Reflection;
using System.Runtime.Versioning;
using EpollSharp.Consumer;

// The consumer app: one echo through an EventLoop, exit code 0 when it came back intact.
string app = typeof(Program).Assembly.GetName().Name!;
string framework = typeof(Program).Assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName ?? "?";
return LoopbackEcho.Run($"{app} ({framework})");
