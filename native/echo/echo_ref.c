/*
 * echo_ref: the reference echo server of the EpollSharp benchmarks.
 *
 * It is the yardstick the managed servers are compared with: one thread,
 * one epoll instance, edge-triggered notifications, non-blocking sockets,
 * nothing else.  Whatever a single core can echo through the kernel's TCP
 * stack, this program should get close to it.
 *
 *   - The listening socket is drained with accept4() until EAGAIN.
 *   - A readable connection is drained with recv() until EAGAIN; every chunk
 *     is sent straight back with send(MSG_NOSIGNAL).  What the kernel does
 *     not take is kept in a per-connection backlog, and EPOLLOUT is
 *     registered only while such a backlog exists.
 *   - A connection whose backlog grows past BACKLOG_HIGH_WATER stops being
 *     read until the backlog falls below half of it, so a peer that never
 *     reads cannot make the server buffer without limit.
 *   - Running out of descriptors (EMFILE/ENFILE) does not make the loop spin:
 *     a reserve descriptor is released, the pending connection is accepted
 *     and closed at once, and the reserve is taken back.  If even that is not
 *     possible, accepting pauses for ACCEPT_PAUSE_MS.
 *   - SIGINT/SIGTERM arrive through a signalfd.  The server then stops
 *     accepting, stops reading, gives pending echo data up to DRAIN_MS to
 *     leave, prints one statistics line and exits 0.
 *
 * stdout carries exactly two lines: the "listening on" line once the socket
 * listens, and the "stats:" line at exit.  Diagnostics go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENT_BATCH        256
#define READ_CHUNK         (64 * 1024)
#define BACKLOG_MIN_CAP    4096
#ifndef BACKLOG_HIGH_WATER
#define BACKLOG_HIGH_WATER (1024 * 1024)
#endif
#define LISTEN_BACKLOG     4096
#define ACCEPT_PAUSE_MS    100
#define DRAIN_MS           1000

struct conn {
    int fd;
    bool out_armed;   /* EPOLLOUT is part of the registered interest */
    bool read_paused; /* reading stopped because the backlog is too large */
    bool eof;         /* peer has finished sending; close once drained */
    char *buf;        /* echo data the kernel has not taken yet */
    size_t off, len, cap;
    struct conn *prev, *next;
};

struct server {
    int ep;
    int lfd;
    int sfd;
    int reserve_fd;
    bool listen_registered;
    int64_t resume_accept_ms;
    struct conn *conns;
    uint64_t accepted;
    uint64_t bytes;
    uint64_t shed;
    uint64_t backlogs; /* times a connection's echo data had to be buffered */
    uint64_t pauses;   /* times reading stopped because a backlog was too large */
};

/* epoll data pointers that identify the two non-connection descriptors */
static char tag_listen;
static char tag_signal;

static char iobuf[READ_CHUNK];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: echo_ref [--host ADDRESS] [--port PORT]\n"
            "  --host ADDRESS  address to bind (default 127.0.0.1)\n"
            "  --port PORT     TCP port, 0 picks a free one (default 8080)\n");
}

static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("echo_ref: setrlimit(RLIMIT_NOFILE)");
    }
}

/* ---- connections ------------------------------------------------------- */

static void conn_close(struct server *s, struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->buf);
    free(c);
}

static int conn_set_out(struct server *s, struct conn *c, bool want_out)
{
    if (c->out_armed == want_out)
        return 0;
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLET | (want_out ? EPOLLOUT : 0),
        .data.ptr = c,
    };
    if (epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        perror("echo_ref: epoll_ctl(MOD)");
        return -1;
    }
    c->out_armed = want_out;
    return 0;
}

static int backlog_append(struct conn *c, const char *data, size_t n)
{
    if (c->off + c->len + n > c->cap && c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len);
        c->off = 0;
    }
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : BACKLOG_MIN_CAP;
        while (cap < c->len + n)
            cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb)
            return -1;
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->off + c->len, data, n);
    c->len += n;
    return 0;
}

/* Sends as much of the backlog as the kernel takes. -1: connection is dead. */
static int backlog_flush(struct server *s, struct conn *c)
{
    while (c->len > 0) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len, MSG_NOSIGNAL);
        if (n > 0) {
            s->bytes += (uint64_t)n;
            c->off += (size_t)n;
            c->len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    /* drained: give the memory back, idle connections should cost little */
    free(c->buf);
    c->buf = NULL;
    c->off = c->cap = 0;
    return 0;
}

/* Reads until EAGAIN (or until the backlog is too large) and echoes. */
static int conn_read(struct server *s, struct conn *c)
{
    for (;;) {
        if (c->len >= BACKLOG_HIGH_WATER) {
            c->read_paused = true;
            s->pauses++;
            return 0;
        }
        ssize_t n = recv(c->fd, iobuf, sizeof iobuf, 0);
        if (n > 0) {
            size_t done = 0;
            if (c->len == 0) {
                ssize_t w = send(c->fd, iobuf, (size_t)n, MSG_NOSIGNAL);
                if (w > 0) {
                    s->bytes += (uint64_t)w;
                    done = (size_t)w;
                } else if (w < 0 && !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                    return -1;
                }
            }
            if (done < (size_t)n && backlog_append(c, iobuf + done, (size_t)n - done) != 0) {
                fprintf(stderr, "echo_ref: out of memory for a connection backlog\n");
                return -1;
            }
        } else if (n == 0) {
            c->eof = true;
            return 0;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        } else {
            return -1; /* ECONNRESET and friends */
        }
    }
}

/* After any activity: keep EPOLLOUT only while a backlog exists. */
static void conn_settle(struct server *s, struct conn *c)
{
    if (c->len > 0) {
        if (!c->out_armed)
            s->backlogs++;
        if (conn_set_out(s, c, true) != 0)
            conn_close(s, c);
    } else if (c->eof) {
        conn_close(s, c);
    } else if (conn_set_out(s, c, false) != 0) {
        conn_close(s, c);
    }
}

static void conn_event(struct server *s, struct conn *c, uint32_t events)
{
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->len > 0) {
        if (backlog_flush(s, c) != 0) {
            conn_close(s, c);
            return;
        }
    }
    if (c->read_paused && c->len < BACKLOG_HIGH_WATER / 2)
        c->read_paused = false; /* read below: data may have been left unread */
    if (!c->read_paused && !c->eof) {
        if (conn_read(s, c) != 0) {
            conn_close(s, c);
            return;
        }
    }
    conn_settle(s, c);
}

/* ---- listening socket ---------------------------------------------------- */

static void accept_pause(struct server *s)
{
    if (s->listen_registered) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, s->lfd, NULL);
        s->listen_registered = false;
    }
    s->resume_accept_ms = now_ms() + ACCEPT_PAUSE_MS;
}

static int accept_resume(struct server *s)
{
    /* adding an edge-triggered fd reports it at once if it is already ready */
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = &tag_listen };
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev) != 0) {
        perror("echo_ref: epoll_ctl(ADD listener)");
        return -1;
    }
    s->listen_registered = true;
    return 0;
}

/* Out of descriptors: shed one pending connection using the reserve fd.
   Note that accept4() fails with EMFILE before it looks at the queue, so an
   EMFILE says nothing about pending connections; only the accept made with
   the reserve's slot tells.
   Returns 1 if a connection was shed (try again), 0 if the queue is empty,
   -1 if there is no reserve to use. */
static int shed_one(struct server *s)
{
    if (s->reserve_fd < 0)
        return -1;
    close(s->reserve_fd);
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    int err = errno;
    if (fd >= 0) {
        close(fd);
        s->shed++;
    }
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->reserve_fd < 0)
        return -1;
    if (fd < 0 && (err == EAGAIN || err == EWOULDBLOCK))
        return 0;
    return 1; /* shed one, or that one connection failed (e.g. ECONNABORTED) */
}

static void conn_add(struct server *s, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = c };
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("echo_ref: epoll_ctl(ADD connection)");
        close(fd);
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->accepted++;
    /* Data may already be queued (the peer can send before we accept); the
       ADD above reports it as an edge, so nothing is lost by waiting. */
}

static void accept_ready(struct server *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_add(s, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue; /* a problem of that one connection, not of the listener */
        case EMFILE:
        case ENFILE:
            switch (shed_one(s)) {
            case 1:
                continue;
            case 0:
                return;
            default:
                accept_pause(s);
                return;
            }
        default: /* ENOBUFS, ENOMEM, ... */
            perror("echo_ref: accept4");
            accept_pause(s);
            return;
        }
    }
}

/* ---- setup ------------------------------------------------------------------ */

static int open_listener(const char *host, const char *port, char *shown, size_t shown_len,
                         unsigned *bound_port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "echo_ref: cannot resolve %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
            break;
        fprintf(stderr, "echo_ref: bind/listen %s:%s: %s\n", host, port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        perror("echo_ref: getsockname");
        close(fd);
        return -1;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, shown, (socklen_t)shown_len);
        *bound_port = ntohs(sin->sin_port);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, shown, (socklen_t)shown_len);
        *bound_port = ntohs(sin6->sin6_port);
    }
    return fd;
}

static bool parse_port(const char *text, unsigned *port)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || end == text || *end || v > 65535)
        return false;
    *port = (unsigned)v;
    return true;
}

/* Returns true when the drain should be cut short (a second signal). */
static bool read_signals(int sfd)
{
    struct signalfd_siginfo si;
    bool got = false;
    while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
        got = true;
    return got;
}

static bool any_backlog(const struct server *s)
{
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->len > 0)
            return true;
    return false;
}

/* After a stop signal: no more accepting or reading; pending echo data gets
   DRAIN_MS to leave.  A second signal ends the wait. */
static void drain(struct server *s)
{
    int64_t deadline = now_ms() + DRAIN_MS;
    struct epoll_event evs[EVENT_BATCH];
    while (any_backlog(s)) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        int n = epoll_wait(s->ep, evs, EVENT_BATCH, (int)left);
        if (n < 0 && errno != EINTR) {
            perror("echo_ref: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_signal) {
                if (read_signals(s->sfd))
                    return;
                continue;
            }
            if (p == &tag_listen)
                continue;
            struct conn *c = p;
            if (c->len > 0 && backlog_flush(s, c) != 0)
                conn_close(s, c);
        }
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    const char *port_text = "8080";
    unsigned port_check;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--host") && i + 1 < argc) {
            host = argv[++i];
        } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port_text = argv[++i];
        } else {
            fprintf(stderr, "echo_ref: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!parse_port(port_text, &port_check)) {
        fprintf(stderr, "echo_ref: bad port '%s'\n", port_text);
        return 2;
    }

    raise_nofile_limit();
    signal(SIGPIPE, SIG_IGN);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        perror("echo_ref: sigprocmask");
        return 1;
    }

    struct server s = { .ep = -1, .lfd = -1, .sfd = -1, .reserve_fd = -1 };
    s.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sfd < 0) {
        perror("echo_ref: signalfd");
        return 1;
    }

    char shown[INET6_ADDRSTRLEN];
    unsigned bound_port = 0;
    s.lfd = open_listener(host, port_text, shown, sizeof shown, &bound_port);
    if (s.lfd < 0)
        return 1;

    s.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    if (s.ep < 0) {
        perror("echo_ref: epoll_create1");
        return 1;
    }
    struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &tag_signal };
    if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.sfd, &sev) != 0 || accept_resume(&s) != 0) {
        perror("echo_ref: epoll_ctl");
        return 1;
    }

    printf("listening on %s:%u backend=c-epoll loops=1\n", shown, bound_port);
    fflush(stdout);

    struct epoll_event evs[EVENT_BATCH];
    bool stop = false;
    while (!stop) {
        int timeout = -1;
        if (!s.listen_registered) {
            int64_t left = s.resume_accept_ms - now_ms();
            if (left <= 0) {
                if (accept_resume(&s) != 0)
                    return 1;
            } else {
                timeout = (int)left;
            }
        }
        int n = epoll_wait(s.ep, evs, EVENT_BATCH, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo_ref: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_listen) {
                accept_ready(&s);
            } else if (p == &tag_signal) {
                if (read_signals(s.sfd))
                    stop = true;
            } else {
                conn_event(&s, p, evs[i].events);
            }
        }
    }

    close(s.lfd); /* refuse new connections from here on */
    drain(&s);
    while (s.conns)
        conn_close(&s, s.conns);
    close(s.ep);
    close(s.sfd);
    if (s.reserve_fd >= 0)
        close(s.reserve_fd);
    fprintf(stderr,
            "echo_ref: write backlogs %" PRIu64 ", read pauses %" PRIu64
            ", connections shed for lack of descriptors %" PRIu64 "\n",
            s.backlogs, s.pauses, s.shed);
    printf("stats: connections=%" PRIu64 " bytes=%" PRIu64 "\n", s.accepted, s.bytes);
    fflush(stdout);
    return 0;
}
