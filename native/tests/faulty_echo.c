/*
 * faulty_echo: test helper for loadgen.  An echo server that damages the
 * stream on purpose, so the tests can show that loadgen's verification sees
 * it.  Not a benchmark subject: level-triggered, blocking sends, simple.
 *
 *   faulty_echo --mode corrupt|drop|extra [--port PORT]
 *
 *   corrupt  flips the lowest bit of the bytes at offsets 5, 1002, 1999, ...
 *   drop     echoes the first 4096 bytes of a connection, swallows the rest
 *   extra    sends one additional byte after every 4096 echoed bytes
 *
 * Prints "listening on 127.0.0.1:PORT" once listening; runs until killed, or
 * for at most 60 seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 4096
#define CHUNK  4096

enum mode { CORRUPT, DROP, EXTRA };

static uint64_t offset_of[MAX_FD]; /* bytes received so far, per connection */

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int serve(int fd, enum mode mode)
{
    char buf[CHUNK];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
        return -1;
    uint64_t start = offset_of[fd];
    offset_of[fd] += (uint64_t)n;
    switch (mode) {
    case CORRUPT:
        for (ssize_t i = 0; i < n; i++)
            if ((start + (uint64_t)i) % 997 == 5)
                buf[i] ^= 1;
        return send_all(fd, buf, (size_t)n);
    case DROP:
        if (start >= CHUNK)
            return 0;
        return send_all(fd, buf, (size_t)(start + (uint64_t)n > CHUNK ? CHUNK - start : (uint64_t)n));
    case EXTRA:
        for (ssize_t i = 0; i < n; i++) {
            if (send_all(fd, buf + i, 1) != 0)
                return -1;
            if ((start + (uint64_t)i) % CHUNK == CHUNK - 1 && send_all(fd, "X", 1) != 0)
                return -1;
        }
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    enum mode mode = CORRUPT;
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode")) {
            if (!strcmp(argv[i + 1], "corrupt"))
                mode = CORRUPT;
            else if (!strcmp(argv[i + 1], "drop"))
                mode = DROP;
            else if (!strcmp(argv[i + 1], "extra"))
                mode = EXTRA;
            else
                return 2;
        } else if (!strcmp(argv[i], "--port")) {
            port = atoi(argv[i + 1]);
        } else {
            return 2;
        }
    }
    alarm(60);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &sl) != 0) {
        perror("faulty_echo: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening on 127.0.0.1:%u\n", ntohs(sin.sin_port));
    fflush(stdout);

    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                if (c >= MAX_FD) {
                    close(c);
                    continue;
                }
                offset_of[c] = 0;
                struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            } else if (serve(fd, mode) != 0) {
                close(fd);
            }
        }
    }
}
