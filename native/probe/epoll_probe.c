/*
 * ABI probe for EpollSharp: prints the C view of every layout and constant that the managed binding
 * hard-codes, one "NAME VALUE" line each (NAME without spaces, VALUE in decimal). The test
 * tests/EpollSharp.Tests/Native/AbiProbeTests.cs compiles this file with `cc`, runs it and compares
 * each line with the managed side (EpollEventLayout, EpollEvents, Interop.Sys, Interop.Errno).
 *
 * Build by hand: cc -std=c11 -Wall -Wextra -Werror -o /tmp/epoll_probe native/probe/epoll_probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received; glibc's netinet/tcp.h has an older one */
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/eventfd.h>

/* Flags are unsigned 32-bit values (EPOLLET is 1u << 31): print them as such. */
#define FLAG(name) printf("%s %lu\n", #name, (unsigned long)(unsigned int)(name))
/* Constants and errno values are small non-negative ints. */
#define INT(name) printf("%s %d\n", #name, (int)(name))

int main(void)
{
    /* struct epoll_event: 12 bytes packed on x86 and x86-64, 16 aligned elsewhere. */
    printf("SIZEOF_EPOLL_EVENT %zu\n", sizeof(struct epoll_event));
    printf("OFFSETOF_EPOLL_EVENT_EVENTS %zu\n", offsetof(struct epoll_event, events));
    printf("OFFSETOF_EPOLL_EVENT_DATA %zu\n", offsetof(struct epoll_event, data));
    printf("SIZEOF_EPOLL_DATA %zu\n", sizeof(epoll_data_t));

    /* Every member of EpollSharp.Native.EpollEvents. */
    FLAG(EPOLLIN);
    FLAG(EPOLLPRI);
    FLAG(EPOLLOUT);
    FLAG(EPOLLERR);
    FLAG(EPOLLHUP);
    FLAG(EPOLLRDNORM);
    FLAG(EPOLLRDBAND);
    FLAG(EPOLLWRNORM);
    FLAG(EPOLLWRBAND);
    FLAG(EPOLLMSG);
    FLAG(EPOLLRDHUP);
    FLAG(EPOLLEXCLUSIVE);
    FLAG(EPOLLWAKEUP);
    FLAG(EPOLLONESHOT);
    FLAG(EPOLLET);

    /* epoll_ctl operations and creation flags (Interop.Sys). */
    INT(EPOLL_CTL_ADD);
    INT(EPOLL_CTL_DEL);
    INT(EPOLL_CTL_MOD);
    INT(EPOLL_CLOEXEC);
    INT(EFD_CLOEXEC);
    INT(EFD_NONBLOCK);
    INT(EFD_SEMAPHORE);

    /* Every constant of Interop.Errno. */
    INT(EPERM);
    INT(ENOENT);
    INT(EINTR);
    INT(EBADF);
    INT(EAGAIN);
    INT(ENOMEM);
    INT(EACCES);
    INT(EFAULT);
    INT(EEXIST);
    INT(EINVAL);
    INT(ENFILE);
    INT(EMFILE);
    INT(ENOSPC);
    INT(EPIPE);
    INT(ELOOP);
    INT(ENOTSOCK);
    INT(EMSGSIZE);
    INT(EOPNOTSUPP);
    INT(ENETDOWN);
    INT(ENETUNREACH);
    INT(ENETRESET);
    INT(ECONNABORTED);
    INT(ECONNRESET);
    INT(ENOBUFS);
    INT(ENOTCONN);
    INT(ESHUTDOWN);
    INT(ETIMEDOUT);
    INT(ECONNREFUSED);
    INT(EHOSTDOWN);
    INT(EHOSTUNREACH);
    INT(EBUSY);
    INT(ENOSYS);
    INT(ETIME);
    INT(ECANCELED);

    /* send() flags (Interop.Sys). */
    INT(MSG_NOSIGNAL);

    /* socketpair(2) arguments (Interop.Sys, Interop.socketpair.cs). */
    INT(AF_UNIX);
    INT(SOCK_STREAM);
    INT(SOCK_CLOEXEC);
    INT(SOCK_NONBLOCK);

    /* statx() and the Unix socket file (Interop.Sys): flags, masks, file types, and struct statx's layout. */
    INT(AT_FDCWD);
    INT(AT_SYMLINK_NOFOLLOW);
    INT(S_IFMT);
    INT(S_IFSOCK);
    /* fcntl() on the descriptors handed over by socket activation (Interop.Sys). */
    INT(F_GETFD);
    INT(F_SETFD);
    INT(FD_CLOEXEC);
    FLAG(STATX_BTIME);
    printf("STATX_TYPE_CTIME_INO_BTIME %lu\n", (unsigned long)(STATX_TYPE | STATX_CTIME | STATX_INO | STATX_BTIME));
    printf("StatxSize %zu\n", sizeof(struct statx));
    printf("StatxMaskOffset %zu\n", offsetof(struct statx, stx_mask));
    printf("StatxModeOffset %zu\n", offsetof(struct statx, stx_mode));
    printf("StatxInoOffset %zu\n", offsetof(struct statx, stx_ino));
    printf("StatxBtimeOffset %zu\n", offsetof(struct statx, stx_btime));
    printf("StatxCtimeOffset %zu\n", offsetof(struct statx, stx_ctime));
    printf("StatxDevMajorOffset %zu\n", offsetof(struct statx, stx_dev_major));
    printf("StatxDevMinorOffset %zu\n", offsetof(struct statx, stx_dev_minor));

    /* Socket options set or read raw (Interop.SocketOptions). */
    INT(SOL_SOCKET);
    INT(SO_REUSEADDR);
    INT(SO_REUSEPORT);
    INT(SO_SNDBUF);
    INT(SO_RCVBUF);
    INT(SO_KEEPALIVE);
    INT(SO_LINGER);
    INT(SO_TYPE);
    INT(IPPROTO_TCP);
    INT(TCP_INFO);
    INT(TCP_KEEPIDLE);
    INT(TCP_KEEPINTVL);
    INT(TCP_KEEPCNT);
    printf("TcpInfoBytesReceivedOffset %zu\n", offsetof(struct tcp_info, tcpi_bytes_received));
    return 0;
}
