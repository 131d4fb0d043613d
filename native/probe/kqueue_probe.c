/*
 * kqueue ABI probe for EpollSharp: prints the C view of every layout and constant that the kqueue backend hard-codes,
 * one "NAME VALUE" line each (NAME without spaces, VALUE in decimal, or a word for FLAVOR). The test
 * tests/EpollSharp.Tests/Backends/KqueueProbeTests.cs compiles it against the headers of the kqueue library in use
 * (libkqueue's sys/event.h on Linux, the system's on macOS and FreeBSD), runs it, and compares each line with the
 * flavour the backend chose (KqueueAbi, Interop.Kqueue).
 *
 * Build by hand:
 *   Linux, libkqueue: cc -std=gnu11 -Wall -Wextra -Werror -I <libkqueue build>/include -o /tmp/kqueue_probe native/probe/kqueue_probe.c
 *   macOS, FreeBSD:   cc -std=gnu11 -Wall -Wextra -Werror -o /tmp/kqueue_probe native/probe/kqueue_probe.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>
#include <sys/event.h>

/* Filters are negative shorts; flags and notes are small unsigned values. */
#define INT(name) printf("%s %ld\n", #name, (long)(name))
#define SIZE(label, value) printf("%s %zu\n", label, (size_t)(value))

int main(void)
{
#if defined(LIBKQUEUE)
    puts("FLAVOR LibKqueue");
#elif defined(__APPLE__)
    puts("FLAVOR Darwin");
#elif defined(__FreeBSD__)
    puts("FLAVOR FreeBsd");
#else
    puts("FLAVOR Unknown");
#endif

    /* struct kevent: 32 bytes on macOS and libkqueue (64-bit), 64 on FreeBSD 12+ (int64_t data, uint64_t ext[4]). */
    SIZE("SIZEOF_KEVENT", sizeof(struct kevent));
    SIZE("OFFSETOF_KEVENT_IDENT", offsetof(struct kevent, ident));
    SIZE("OFFSETOF_KEVENT_FILTER", offsetof(struct kevent, filter));
    SIZE("OFFSETOF_KEVENT_FLAGS", offsetof(struct kevent, flags));
    SIZE("OFFSETOF_KEVENT_FFLAGS", offsetof(struct kevent, fflags));
    SIZE("OFFSETOF_KEVENT_DATA", offsetof(struct kevent, data));
    SIZE("OFFSETOF_KEVENT_UDATA", offsetof(struct kevent, udata));
    SIZE("SIZEOF_KEVENT_IDENT", sizeof(((struct kevent *)0)->ident));
    SIZE("SIZEOF_KEVENT_DATA", sizeof(((struct kevent *)0)->data));
    SIZE("SIZEOF_KEVENT_UDATA", sizeof(((struct kevent *)0)->udata));
#if defined(__FreeBSD__) && !defined(LIBKQUEUE)
    SIZE("OFFSETOF_KEVENT_EXT", offsetof(struct kevent, ext));
    SIZE("SIZEOF_KEVENT_EXT", sizeof(((struct kevent *)0)->ext));
#endif
    SIZE("SIZEOF_TIMESPEC", sizeof(struct timespec));
    SIZE("OFFSETOF_TIMESPEC_TV_NSEC", offsetof(struct timespec, tv_nsec));

    INT(EVFILT_READ);
    INT(EVFILT_WRITE);
    INT(EVFILT_TIMER);
    INT(EVFILT_USER);

    INT(EV_ADD);
    INT(EV_DELETE);
    INT(EV_ENABLE);
    INT(EV_DISABLE);
    INT(EV_ONESHOT);
    INT(EV_CLEAR);
    INT(EV_RECEIPT);
    INT(EV_DISPATCH);
    INT(EV_ERROR);
    INT(EV_EOF);

    INT(NOTE_TRIGGER);
    INT(NOTE_SECONDS);
    INT(NOTE_USECONDS);
    INT(NOTE_NSECONDS);
#ifdef NOTE_MSECONDS
    INT(NOTE_MSECONDS);
#endif
#ifdef NOTE_ABSOLUTE
    INT(NOTE_ABSOLUTE);
#endif
#ifdef NOTE_ABSTIME
    INT(NOTE_ABSTIME);
#endif
    return 0;
}
