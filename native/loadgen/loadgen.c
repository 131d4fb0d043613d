/*
 * loadgen: the load generator of the EpollSharp benchmarks.
 *
 * Two modes, both driven by epoll on non-blocking sockets (one epoll
 * instance per thread, connections spread over the threads):
 *
 *   pingpong  Every connection keeps `inflight` messages of `size` bytes
 *             outstanding; each message fully echoed back releases the next
 *             one.  The bytes of connection i are a pseudo-random stream that
 *             depends only on i and the stream offset, so every echoed byte is
 *             checked against what was sent.  Latency of a message runs from
 *             the send() carrying its first byte to the recv() carrying its
 *             last byte, recorded in a log-linear histogram (resolution better
 *             than 1 %, range up to about 36 minutes, fixed memory).  Messages
 *             sent during the warm-up are not counted.
 *
 *   idle      Opens the connections, holds them without traffic for
 *             `duration` seconds, then checks that each one still echoes a
 *             small probe.
 *
 * With --tls (when built with OpenSSL 3) every connection speaks TLS: the
 * handshake is part of opening the connection (its time counts against the
 * connect budget, never in the message latencies), then SSL_read/SSL_write
 * run non-blocking on the same epoll loop and the same checks apply to the
 * decrypted bytes.  The server's certificate is not verified (a benchmark
 * against 127.0.0.1, not a secure client).
 *
 * Every phase has a deadline, and a watchdog alarm ends the process if
 * something still hangs, so the program always finishes on its own within
 * connect budget + warmup + duration + drain grace + WATCHDOG_SLACK_S seconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define EVENT_BATCH          512
#define IO_CHUNK             (64 * 1024)
#define CONNECT_BATCH        256   /* connects in progress at once, per thread */
#define CONNECT_BUDGET_S     5.0   /* the whole connect phase, unless --connect-budget */
#define CONNECT_ATTEMPT_MS   2000  /* one attempt (covers one SYN retransmission) */
#define CONNECT_MAX_ATTEMPTS 8
#define CONNECT_BACKOFF_MS   5     /* doubled per attempt ... */
#define CONNECT_BACKOFF_MAX  500   /* ... up to this */
#define DRAIN_GRACE_S        3.0   /* after the run: time for outstanding echoes, unless --drain-grace */
#define EXCESS_WATCH_MS      100   /* after everything came back: watch for extra bytes */
#define IDLE_PROBE_SIZE      16
#define IDLE_PROBE_MS        3000
#define WATCHDOG_SLACK_S     10
#define SOURCE_SPREAD        64    /* loopback source addresses 127.0.0.1 .. 127.0.0.64 */
#define MAX_THREADS          64
#define MAX_INFLIGHT         1024
#define MAX_SIZE             (64u * 1024 * 1024)
#define MAX_RING_SLOTS       (4u * 1024 * 1024) /* connections * inflight */

#define NS_PER_MS 1000000LL
#define NS_PER_S  1000000000LL

/* ---- time, pattern ------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The 8 bytes at stream offsets [8*idx, 8*idx + 8) of a connection. */
static inline uint64_t pattern_word(uint64_t seed, uint64_t idx)
{
    return mix64(seed + idx * 0x9e3779b97f4a7c15ULL);
}

static inline uint8_t word_byte(uint64_t w, uint64_t pos)
{
    return (uint8_t)(w >> (8 * (pos & 7)));
}

static inline void store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Writes the stream bytes [off, off + len) of a connection into p. */
static void pattern_fill(uint64_t seed, uint64_t off, unsigned char *p, size_t len)
{
    size_t i = 0;
    uint64_t pos = off;
    if (pos & 7) {
        uint64_t w = pattern_word(seed, pos >> 3);
        while (i < len && (pos & 7))
            p[i++] = word_byte(w, pos++);
    }
    for (; len - i >= 8; i += 8, pos += 8)
        store_le64(p + i, pattern_word(seed, pos >> 3));
    if (i < len) {
        uint64_t w = pattern_word(seed, pos >> 3);
        while (i < len)
            p[i++] = word_byte(w, pos++);
    }
}

/* Number of bytes in p that differ from the stream bytes [off, off + len). */
static uint64_t pattern_check(uint64_t seed, uint64_t off, const unsigned char *p, size_t len)
{
    uint64_t bad = 0;
    size_t i = 0;
    uint64_t pos = off;
    if (pos & 7) {
        uint64_t w = pattern_word(seed, pos >> 3);
        while (i < len && (pos & 7))
            bad += p[i++] != word_byte(w, pos++);
    }
    for (; len - i >= 8; i += 8, pos += 8) {
        uint64_t diff = load_le64(p + i) ^ pattern_word(seed, pos >> 3);
        if (diff)
            for (int b = 0; b < 8; b++)
                bad += ((diff >> (8 * b)) & 0xff) != 0;
    }
    if (i < len) {
        uint64_t w = pattern_word(seed, pos >> 3);
        while (i < len)
            bad += p[i++] != word_byte(w, pos++);
    }
    return bad;
}

/* ---- latency histogram ----------------------------------------------------
 * Values in nanoseconds.  Below HIST_SUB every value has its own bucket;
 * above, each power-of-two range [2^k, 2^(k+1)) is cut into HIST_HALF equal
 * buckets, so a bucket is never wider than 1/128 of its values.  Values of
 * 2^(HIST_MAX_BIT+1) ns or more share the last bucket; the exact maximum is
 * kept on the side. */

#define HIST_SUB_BITS 8
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_HALF     (HIST_SUB / 2)
#define HIST_MAX_BIT  40
#define HIST_BUCKETS  (HIST_SUB + (HIST_MAX_BIT - HIST_SUB_BITS + 1) * HIST_HALF)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    if (k > HIST_MAX_BIT)
        return HIST_BUCKETS - 1;
    unsigned shift = k - (HIST_SUB_BITS - 1);
    return HIST_SUB + (k - HIST_SUB_BITS) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

/* Largest value that lands in bucket idx. */
static uint64_t hist_bucket_top(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned j = idx - HIST_SUB;
    unsigned k = HIST_SUB_BITS + j / HIST_HALF;
    unsigned shift = k - (HIST_SUB_BITS - 1);
    uint64_t sub = HIST_HALF + j % HIST_HALF;
    return (sub << shift) + ((uint64_t)1 << shift) - 1;
}

static void hist_record(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    if (from->max > into->max)
        into->max = from->max;
}

/* Value at quantile q (0 < q <= 1): upper edge of its bucket, never above max. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    double exact = q * (double)h->count;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* ---- options ---------------------------------------------------------------- */

enum mode { MODE_PINGPONG, MODE_IDLE };

struct options {
    const char *host;
    const char *port;
    long connections;
    long size;
    long inflight;
    double warmup;
    double duration;
    double connect_budget;
    double drain_grace;
    long threads;
    long rcvbuf;
    enum mode mode;
    bool json;
    bool spread;
    bool progress;
    bool tls;
    const char *alpn; /* comma-separated protocol names, or NULL */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen --port PORT [options]\n"
            "  --host ADDRESS       server address (default 127.0.0.1)\n"
            "  --port PORT          server port (required)\n"
            "  --connections N      connections to open (default 64)\n"
            "  --size BYTES         pingpong message size (default 64)\n"
            "  --inflight K         messages outstanding per connection (default 1)\n"
            "  --warmup SECONDS     pingpong traffic not counted (default 1)\n"
            "  --duration SECONDS   measured pingpong time, or idle hold time (default 5)\n"
            "  --mode pingpong|idle (default pingpong)\n"
            "  --connect-budget S   time for opening all the connections; those not open\n"
            "                       by then count as connect failures (default %.0f)\n"
            "  --drain-grace S      after the run, time for the echoes still outstanding;\n"
            "                       what has not come back by then counts as lost (default %.0f)\n"
            "  --threads T          threads sharing the connections (default 1)\n"
            "  --rcvbuf BYTES       SO_RCVBUF of each connection (default: kernel's)\n"
            "  --no-source-spread   towards 127.x.y.z, connect from 127.0.0.1 only\n"
            "                       (default: from 127.0.0.1 .. 127.0.0.%d)\n"
            "  --json               print one JSON line instead of text\n"
            "  --progress           on stderr, one line when the connect phase ends and\n"
            "                       traffic (or the idle hold) starts\n"
            "  --tls                speak TLS (OpenSSL): the handshake is part of opening a\n"
            "                       connection (connect budget), never of a message's latency;\n"
            "                       the server's certificate is NOT verified (for benchmarks\n"
            "                       against 127.0.0.1 only)%s\n"
            "  --alpn P1,P2         with --tls, offer these ALPN protocol names\n",
            CONNECT_BUDGET_S, DRAIN_GRACE_S, SOURCE_SPREAD,
#ifdef LOADGEN_TLS
            ""
#else
            " [not in this build: built without OpenSSL]"
#endif
            );
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0) || v > 86400.0)
        return false;
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){ .host = "127.0.0.1", .port = NULL, .connections = 64, .size = 64,
                           .inflight = 1, .warmup = 1.0, .duration = 5.0,
                           .connect_budget = CONNECT_BUDGET_S, .drain_grace = DRAIN_GRACE_S, .threads = 1,
                           .mode = MODE_PINGPONG, .json = false, .spread = true };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        } else if (!strcmp(a, "--no-source-spread")) {
            o->spread = false;
            continue;
        } else if (!strcmp(a, "--progress")) {
            o->progress = true;
            continue;
        } else if (!strcmp(a, "--tls")) {
            o->tls = true;
            continue;
        }
        static const char *const valued[] = { "--host", "--port", "--connections", "--size",
                                              "--inflight", "--warmup", "--duration",
                                              "--threads", "--mode", "--rcvbuf", "--connect-budget",
                                              "--drain-grace", "--alpn" };
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "loadgen: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (!v) {
            ok = false;
        } else if (!strcmp(a, "--host")) {
            o->host = v;
        } else if (!strcmp(a, "--port")) {
            long p;
            ok = parse_long(v, 1, 65535, &p);
            o->port = v;
        } else if (!strcmp(a, "--connections")) {
            ok = parse_long(v, 1, 1000000, &o->connections);
        } else if (!strcmp(a, "--size")) {
            ok = parse_long(v, 1, MAX_SIZE, &o->size);
        } else if (!strcmp(a, "--inflight")) {
            ok = parse_long(v, 1, MAX_INFLIGHT, &o->inflight);
        } else if (!strcmp(a, "--warmup")) {
            ok = parse_seconds(v, &o->warmup);
        } else if (!strcmp(a, "--duration")) {
            ok = parse_seconds(v, &o->duration);
        } else if (!strcmp(a, "--connect-budget")) {
            ok = parse_seconds(v, &o->connect_budget) && o->connect_budget > 0.0 && o->connect_budget <= 3600.0;
        } else if (!strcmp(a, "--drain-grace")) {
            ok = parse_seconds(v, &o->drain_grace) && o->drain_grace > 0.0 && o->drain_grace <= 3600.0;
        } else if (!strcmp(a, "--threads")) {
            ok = parse_long(v, 1, MAX_THREADS, &o->threads);
        } else if (!strcmp(a, "--rcvbuf")) {
            ok = parse_long(v, 1, 1L << 30, &o->rcvbuf);
        } else if (!strcmp(a, "--alpn")) {
            /* protocol names of 1 to 255 bytes, comma-separated */
            size_t len = strlen(v), start = 0;
            ok = len > 0;
            for (size_t k = 0; ok && k <= len; k++) {
                if (k == len || v[k] == ',') {
                    ok = k - start >= 1 && k - start <= 255;
                    start = k + 1;
                }
            }
            o->alpn = v;
        } else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "pingpong"))
                o->mode = MODE_PINGPONG;
            else if (!strcmp(v, "idle"))
                o->mode = MODE_IDLE;
            else
                ok = false;
        }
        if (!ok) {
            fprintf(stderr, "loadgen: bad or missing value for %s\n", a);
            usage(stderr);
            return -1;
        }
        i++;
    }
    if (!o->port) {
        fprintf(stderr, "loadgen: --port is required\n");
        usage(stderr);
        return -1;
    }
    if (o->mode == MODE_PINGPONG && o->duration <= 0.0) {
        fprintf(stderr, "loadgen: pingpong needs --duration > 0\n");
        return -1;
    }
    if ((unsigned long)o->connections * (unsigned long)o->inflight > MAX_RING_SLOTS) {
        fprintf(stderr, "loadgen: connections * inflight must not exceed %u\n", MAX_RING_SLOTS);
        return -1;
    }
    if (o->alpn && !o->tls) {
        fprintf(stderr, "loadgen: --alpn needs --tls\n");
        return -1;
    }
#ifndef LOADGEN_TLS
    if (o->tls) {
        fprintf(stderr, "loadgen: --tls: this loadgen was built without OpenSSL (install libssl-dev and rebuild)\n");
        return -1;
    }
#endif
    if (o->threads > o->connections)
        o->threads = o->connections;
    return 0;
}

/* ---- connections and workers ---------------------------------------------- */

enum cstate {
    CS_PENDING,    /* waiting for its (next) connect attempt */
    CS_CONNECTING, /* non-blocking connect in progress */
    CS_HANDSHAKE,  /* connected, TLS handshake in progress (--tls) */
    CS_OPEN,
    CS_FAILED,     /* never connected */
    CS_BROKEN,     /* connected, then failed (error, unexpected close) */
};

struct lconn {
    int fd;
#ifdef LOADGEN_TLS
    SSL *ssl; /* --tls only */
#endif
    uint8_t state;
    uint8_t attempts;
    bool bad;        /* wrong or extra bytes were seen */
    uint32_t id;     /* connection number, 0 .. connections-1 */
    int64_t when;    /* PENDING: next attempt; CONNECTING: attempt start */
    uint64_t seed;
    uint64_t tx;        /* bytes sent */
    uint64_t tx_target; /* bytes of all messages issued so far */
    uint64_t rx;        /* bytes received and matched to sent bytes (<= tx) */
    uint64_t done;      /* messages completely echoed */
    int64_t *starts;    /* send time of message m at [m % inflight] */
};

struct worker {
    const struct options *o;
    const struct sockaddr *addr;
    socklen_t addrlen;
    bool spread; /* bind a loopback source address per connection */
    int ep;
    struct lconn *c;
    size_t n;
    int64_t *starts;
    struct hist *h;
    uint64_t msg_size;
    uint64_t inflight;
    bool issuing;
    int64_t measure_start, measure_end;
    uint64_t outstanding; /* bytes issued on open connections, not yet echoed */
    unsigned connecting;
    int last_connect_errno;
    uint64_t opened, messages, errors, mismatches, excess, lost, connect_failures;
    uint64_t held, echo_ok, echo_failed;
    bool ran; /* false when no connection at all could be opened */
    char tls_error[200]; /* --tls: the last handshake or TLS error, for the final message */
    pthread_t thread;
    unsigned char sbuf[IO_CHUNK];
    unsigned char rbuf[IO_CHUNK];
};

static pthread_barrier_t g_barrier;
static atomic_ulong g_opened;
static int64_t g_connect_deadline;
#ifdef LOADGEN_TLS
static SSL_CTX *g_tls; /* --tls: the client context shared by every connection; NULL otherwise */
#endif

/* Closes the socket (and ends its TLS session, sending close_notify when
   `orderly` and the connection is open). */
static void conn_close(struct lconn *c, bool orderly)
{
#ifdef LOADGEN_TLS
    if (c->ssl) {
        if (orderly && c->state == CS_OPEN) {
            ERR_clear_error();
            SSL_shutdown(c->ssl); /* non-blocking: sends close_notify if the socket takes it */
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#else
    (void)orderly;
#endif
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

#ifdef LOADGEN_TLS
static void tls_note_error(struct worker *w, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[160] = "no OpenSSL error queued";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(w->tls_error, sizeof w->tls_error, "%s: %s", what, buf);
    ERR_clear_error();
}
#endif

/* send() or SSL_write(): bytes taken (> 0), or -1 with errno (EAGAIN: try
   again on the next event, with the same bytes at the same offset). */
static ssize_t conn_send(struct worker *w, struct lconn *c, const unsigned char *p, size_t len)
{
#ifdef LOADGEN_TLS
    if (c->ssl) {
        size_t written = 0;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, p, len, &written) > 0)
            return (ssize_t)written;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            errno = EAGAIN;
            return -1;
        }
        tls_note_error(w, "SSL_write");
        errno = EIO;
        return -1;
    }
#else
    (void)w;
#endif
    return send(c->fd, p, len, MSG_NOSIGNAL);
}

/* recv() or SSL_read(): bytes (> 0), 0 at the end of the stream, or -1 with
   errno (EAGAIN: nothing more until the next event). */
static ssize_t conn_recv(struct worker *w, struct lconn *c, unsigned char *p, size_t len)
{
#ifdef LOADGEN_TLS
    if (c->ssl) {
        size_t got = 0;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, p, len, &got) > 0)
            return (ssize_t)got;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0; /* close_notify */
        tls_note_error(w, "SSL_read");
        errno = EIO;
        return -1;
    }
#else
    (void)w;
#endif
    return recv(c->fd, p, len, 0);
}

static void conn_broken(struct worker *w, struct lconn *c)
{
    conn_close(c, false);
    c->state = CS_BROKEN;
    w->errors++;
    w->outstanding -= c->tx_target - c->rx;
}

/* Sends issued bytes until done or the socket buffer is full. */
static void pump_send(struct worker *w, struct lconn *c)
{
    while (c->tx < c->tx_target) {
        uint64_t want = c->tx_target - c->tx;
        size_t len = want > IO_CHUNK ? IO_CHUNK : (size_t)want;
        pattern_fill(c->seed, c->tx, w->sbuf, len);
        int64_t t = now_ns();
        ssize_t n = conn_send(w, c, w->sbuf, len);
        if (n > 0) {
            /* stamp every message whose first byte left with this send */
            uint64_t size = w->msg_size;
            uint64_t end = c->tx + (uint64_t)n;
            for (uint64_t m = (c->tx + size - 1) / size; m * size < end; m++)
                c->starts[m % w->inflight] = t;
            c->tx = end;
            if ((size_t)n < len)
                return; /* buffer full; EPOLLOUT will come (SSL_write takes all or nothing) */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            conn_broken(w, c);
            return;
        }
    }
}

static void on_data(struct worker *w, struct lconn *c, const unsigned char *p, size_t n, int64_t t)
{
    uint64_t room = c->tx - c->rx;
    size_t valid = n <= room ? n : (size_t)room;
    if (valid < n) {
        w->excess += n - valid;
        c->bad = true;
    }
    if (valid) {
        uint64_t wrong = pattern_check(c->seed, c->rx, p, valid);
        if (wrong) {
            w->mismatches += wrong;
            c->bad = true;
        }
        c->rx += valid;
        w->outstanding -= valid;
    }
    uint64_t size = w->msg_size;
    while (c->rx >= (c->done + 1) * size) {
        int64_t st = c->starts[c->done % w->inflight];
        if (st >= w->measure_start && t <= w->measure_end) {
            hist_record(w->h, (uint64_t)(t - st));
            w->messages++;
        }
        c->done++;
        if (w->issuing) {
            c->tx_target += size;
            w->outstanding += size;
        }
    }
    if (c->tx < c->tx_target)
        pump_send(w, c);
}

static void do_recv(struct worker *w, struct lconn *c, uint32_t ev)
{
    /* A short read means the receive queue was empty at that moment, and
       whatever arrives later raises a new edge, so the recv() that would only
       return EAGAIN is skipped.  Not when the peer's FIN or an error may be
       queued behind the data: then read on until EOF, error or EAGAIN. */
    bool short_ok = !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
#ifdef LOADGEN_TLS
    /* SSL_read returns a record at a time: a short one says nothing about
       the socket, so read until it wants more. */
    if (c->ssl)
        short_ok = false;
#endif
    for (;;) {
        ssize_t n = conn_recv(w, c, w->rbuf, sizeof w->rbuf);
        if (n > 0) {
            on_data(w, c, w->rbuf, (size_t)n, now_ns());
            if (c->state != CS_OPEN)
                return;
            if (short_ok && (size_t)n < sizeof w->rbuf)
                return;
        } else if (n == 0) {
            conn_broken(w, c); /* the server closed on us */
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            conn_broken(w, c);
            return;
        }
    }
}

static void conn_io(struct worker *w, struct lconn *c, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        do_recv(w, c, ev);
        if (c->state != CS_OPEN)
            return;
    }
    if ((ev & EPOLLOUT) && c->tx < c->tx_target)
        pump_send(w, c);
}

/* ---- connect phase ---------------------------------------------------------- */

static bool connect_retryable(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case EAGAIN:
    case EADDRNOTAVAIL:
    case EADDRINUSE:
    case ETIMEDOUT:
    case ECONNRESET:
    case ECONNABORTED:
    case EINTR:
    case ENOBUFS:
        return true;
    default:
        return false;
    }
}

static void connect_failed(struct worker *w, struct lconn *c, int err)
{
    conn_close(c, false);
    c->state = CS_FAILED;
    w->connect_failures++;
    w->last_connect_errno = err;
}

static void connect_attempt_failed(struct worker *w, struct lconn *c, int err, int64_t now)
{
    if (c->state == CS_CONNECTING)
        w->connecting--;
    if (!connect_retryable(err) || c->attempts >= CONNECT_MAX_ATTEMPTS) {
        connect_failed(w, c, err);
        return;
    }
    conn_close(c, false);
    int64_t backoff = (int64_t)CONNECT_BACKOFF_MS << (c->attempts - 1);
    if (backoff > CONNECT_BACKOFF_MAX)
        backoff = CONNECT_BACKOFF_MAX;
    c->state = CS_PENDING;
    c->when = now + backoff * NS_PER_MS;
    w->last_connect_errno = err;
}

#ifdef LOADGEN_TLS
/* One step of a TLS handshake (on every event of the connection until done). */
static void handshake_step(struct worker *w, struct lconn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        w->connecting--;
        c->state = CS_OPEN;
        w->opened++;
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    /* a failed handshake is not retried: the server answered, and not with TLS
       (or not with a protocol or cipher both sides know) */
    if (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
        snprintf(w->tls_error, sizeof w->tls_error, "TLS handshake: %s",
                 errno ? strerror(errno) : "the server closed the connection");
    else
        tls_note_error(w, "TLS handshake");
    w->connecting--;
    connect_failed(w, c, EPROTO);
}
#endif

static void connect_established(struct worker *w, struct lconn *c)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
    int op = c->state == CS_CONNECTING ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (c->state == CS_CONNECTING)
        w->connecting--;
    if (epoll_ctl(w->ep, op, c->fd, &ev) != 0) {
        connect_failed(w, c, errno);
        return;
    }
#ifdef LOADGEN_TLS
    if (g_tls) {
        /* the handshake belongs to opening the connection: it counts against
           the connect budget and takes a place in the connect batch */
        c->ssl = SSL_new(g_tls);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            tls_note_error(w, "SSL_new");
            connect_failed(w, c, ENOMEM);
            return;
        }
        SSL_set_connect_state(c->ssl);
        c->state = CS_HANDSHAKE;
        w->connecting++;
        handshake_step(w, c);
        return;
    }
#endif
    c->state = CS_OPEN;
    w->opened++;
}

static void connect_start(struct worker *w, struct lconn *c, int64_t now)
{
    c->attempts++;
    c->fd = socket(w->addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        connect_failed(w, c, errno); /* EMFILE and the like: retrying will not help */
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (w->o->rcvbuf > 0) {
        /* before connect(), so that the window scale is chosen accordingly */
        int size = (int)w->o->rcvbuf;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    if (w->spread) {
        /* The kernel looks for a free source port by probing candidates, and
           with thousands of connections to one address and port each probe
           mostly hits a port in use: connecting slows down quadratically.
           Spreading the connections over several loopback source addresses
           keeps the first candidates free.  The port is still chosen at
           connect() time thanks to IP_BIND_ADDRESS_NO_PORT. */
        struct sockaddr_in src = { .sin_family = AF_INET };
        src.sin_addr.s_addr = htonl(0x7f000001u + c->id % SOURCE_SPREAD);
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0) {
            connect_attempt_failed(w, c, errno, now);
            return;
        }
    }
    if (connect(c->fd, w->addr, w->addrlen) == 0) {
        connect_established(w, c);
        return;
    }
    if (errno != EINPROGRESS) {
        connect_attempt_failed(w, c, errno, now);
        return;
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        connect_failed(w, c, errno);
        return;
    }
    c->state = CS_CONNECTING;
    c->when = now;
    w->connecting++;
}

static void connect_event(struct worker *w, struct lconn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0)
        connect_established(w, c);
    else
        connect_attempt_failed(w, c, err, now_ns());
}

static int wait_ms(int64_t until, int64_t now)
{
    if (until <= now)
        return 0;
    int64_t ms = (until - now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > 60000 ? 60000 : (int)ms;
}

static void dispatch(struct worker *w, int timeout_ms)
{
    struct epoll_event evs[EVENT_BATCH];
    int k = epoll_wait(w->ep, evs, EVENT_BATCH, timeout_ms);
    for (int i = 0; i < k; i++) {
        struct lconn *c = evs[i].data.ptr;
        if (c->state == CS_CONNECTING)
            connect_event(w, c);
#ifdef LOADGEN_TLS
        else if (c->state == CS_HANDSHAKE)
            handshake_step(w, c);
#endif
        else if (c->state == CS_OPEN)
            conn_io(w, c, evs[i].events);
    }
}

/* Opens the connections: at most CONNECT_BATCH attempts in flight, retrying
   refusals and timeouts with a doubling backoff; whatever is not open by the
   deadline counts as a connect failure. */
static void connect_phase(struct worker *w, int64_t deadline)
{
    size_t first = 0; /* connections before this index are settled */
    for (;;) {
        int64_t now = now_ns();
        int64_t wake = now + 50 * NS_PER_MS;
        bool unsettled = false;
        unsigned seen_connecting = 0;
        for (size_t i = first; i < w->n; i++) {
            struct lconn *c = &w->c[i];
            if (c->state == CS_OPEN || c->state == CS_FAILED || c->state == CS_BROKEN) {
                if (i == first)
                    first++;
                continue;
            }
            unsettled = true;
            if (c->state == CS_CONNECTING) {
                int64_t limit = c->when + CONNECT_ATTEMPT_MS * NS_PER_MS;
                if (now >= limit)
                    connect_attempt_failed(w, c, ETIMEDOUT, now);
                else if (limit < wake)
                    wake = limit;
            }
            if (c->state == CS_PENDING) {
                if (c->when > now) {
                    if (c->when < wake)
                        wake = c->when;
                } else if (w->connecting < CONNECT_BATCH) {
                    connect_start(w, c, now);
                }
            }
            if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE)
                seen_connecting++;
            /* batch full and every attempt in flight checked: nothing more to do */
            if (w->connecting >= CONNECT_BATCH && seen_connecting >= w->connecting)
                break;
        }
        if (!unsettled)
            return;
        if (now >= deadline) {
            for (size_t i = first; i < w->n; i++) {
                struct lconn *c = &w->c[i];
                if (c->state == CS_PENDING || c->state == CS_CONNECTING || c->state == CS_HANDSHAKE)
                    connect_failed(w, c, ETIMEDOUT);
            }
            w->connecting = 0;
            return;
        }
        if (wake > deadline)
            wake = deadline;
        dispatch(w, wait_ms(wake, now_ns()));
    }
}

/* ---- run phases --------------------------------------------------------------- */

static void run_until(struct worker *w, int64_t until)
{
    for (int64_t now = now_ns(); now < until; now = now_ns())
        dispatch(w, wait_ms(until, now));
}

/* Waits for the outstanding echoes (bounded), then a moment longer for bytes
   that should not come at all. */
static void drain_outstanding(struct worker *w, int64_t grace_ms)
{
    int64_t now = now_ns();
    int64_t grace_end = now + grace_ms * NS_PER_MS;
    int64_t quiet_end = 0;
    while (now < grace_end) {
        int64_t until = grace_end;
        if (w->outstanding == 0) {
            if (!quiet_end)
                quiet_end = now + EXCESS_WATCH_MS * NS_PER_MS;
            if (now >= quiet_end)
                break;
            if (quiet_end < until)
                until = quiet_end;
        }
        dispatch(w, wait_ms(until, now));
        now = now_ns();
    }
}

static void pingpong_phase(struct worker *w)
{
    const struct options *o = w->o;
    int64_t t0 = now_ns();
    w->measure_start = t0 + (int64_t)(o->warmup * NS_PER_S);
    w->measure_end = w->measure_start + (int64_t)(o->duration * NS_PER_S);
    w->issuing = true;
    for (size_t i = 0; i < w->n; i++) {
        struct lconn *c = &w->c[i];
        if (c->state != CS_OPEN)
            continue;
        c->tx_target = w->inflight * w->msg_size;
        w->outstanding += c->tx_target;
        pump_send(w, c);
    }
    run_until(w, w->measure_end);
    w->issuing = false;
    drain_outstanding(w, (int64_t)(o->drain_grace * 1000.0));
    for (size_t i = 0; i < w->n; i++)
        w->lost += w->c[i].tx - w->c[i].rx;
}

static void idle_phase(struct worker *w)
{
    w->measure_start = INT64_MAX; /* nothing goes into the histogram */
    w->measure_end = 0;
    run_until(w, now_ns() + (int64_t)(w->o->duration * NS_PER_S));
    for (size_t i = 0; i < w->n; i++)
        w->held += w->c[i].state == CS_OPEN;

    w->issuing = false;
    for (size_t i = 0; i < w->n; i++) {
        struct lconn *c = &w->c[i];
        if (c->state != CS_OPEN)
            continue;
        c->tx_target = IDLE_PROBE_SIZE;
        w->outstanding += IDLE_PROBE_SIZE;
        pump_send(w, c);
    }
    drain_outstanding(w, IDLE_PROBE_MS);
    for (size_t i = 0; i < w->n; i++) {
        struct lconn *c = &w->c[i];
        if (c->state == CS_FAILED)
            continue;
        if (c->state == CS_OPEN && c->rx == IDLE_PROBE_SIZE && !c->bad)
            w->echo_ok++;
        else
            w->echo_failed++;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    connect_phase(w, g_connect_deadline);
    atomic_fetch_add(&g_opened, w->opened);
    if (pthread_barrier_wait(&g_barrier) == PTHREAD_BARRIER_SERIAL_THREAD && w->o->progress) {
        fprintf(stderr, "loadgen: %ld connections open, %s starts\n", (long)atomic_load(&g_opened),
                w->o->mode == MODE_PINGPONG ? "traffic" : "the hold");
        fflush(stderr);
    }
    if (atomic_load(&g_opened) > 0) {
        w->ran = true;
        if (w->o->mode == MODE_PINGPONG)
            pingpong_phase(w);
        else
            idle_phase(w);
    }
    for (size_t i = 0; i < w->n; i++)
        conn_close(&w->c[i], true);
    return NULL;
}

/* ---- main ----------------------------------------------------------------------- */

static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "loadgen: watchdog expired, giving up\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

static void raise_nofile_limit(long wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("loadgen: setrlimit(RLIMIT_NOFILE)");
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)wanted + 16 > rl.rlim_cur)
        fprintf(stderr, "loadgen: %ld connections but only %llu descriptors allowed; some will fail\n",
                wanted, (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, watchdog);
    double budget = o.connect_budget + (o.mode == MODE_PINGPONG ? o.warmup : 0.0) + o.duration
                    + (o.mode == MODE_PINGPONG ? o.drain_grace : 0.0) + WATCHDOG_SLACK_S;
    alarm((unsigned)budget + 1);

    raise_nofile_limit(o.connections);

#ifdef LOADGEN_TLS
    if (o.tls) {
        /* A benchmark client: no certificate verification (the servers are on
           127.0.0.1 with throw-away certificates), no session resumption (every
           connection does a full handshake). */
        g_tls = SSL_CTX_new(TLS_client_method());
        if (!g_tls) {
            fprintf(stderr, "loadgen: SSL_CTX_new failed\n");
            return 1;
        }
        SSL_CTX_set_verify(g_tls, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(g_tls, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_read_ahead(g_tls, 1);
        SSL_CTX_set_session_cache_mode(g_tls, SSL_SESS_CACHE_OFF);
        if (o.alpn) {
            unsigned char wire[1024];
            size_t len = 0, start = 0, n = strlen(o.alpn);
            for (size_t k = 0; k <= n; k++) {
                if (k == n || o.alpn[k] == ',') {
                    size_t l = k - start;
                    if (len + 1 + l > sizeof wire) {
                        fprintf(stderr, "loadgen: --alpn: the list is too long\n");
                        return 2;
                    }
                    wire[len++] = (unsigned char)l;
                    memcpy(wire + len, o.alpn + start, l);
                    len += l;
                    start = k + 1;
                }
            }
            if (SSL_CTX_set_alpn_protos(g_tls, wire, (unsigned)len) != 0) {
                fprintf(stderr, "loadgen: --alpn: rejected by OpenSSL\n");
                return 2;
            }
        }
    }
#endif

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(o.host, o.port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s: %s\n", o.host, gai_strerror(rc));
        return 2;
    }

    size_t nthreads = (size_t)o.threads;
    uint64_t msg_size = o.mode == MODE_PINGPONG ? (uint64_t)o.size : IDLE_PROBE_SIZE;
    uint64_t inflight = o.mode == MODE_PINGPONG ? (uint64_t)o.inflight : 1;
    struct worker **ws = calloc(nthreads, sizeof *ws);
    struct lconn *conns = calloc((size_t)o.connections, sizeof *conns);
    int64_t *starts = calloc((size_t)o.connections * inflight, sizeof *starts);
    if (!ws || !conns || !starts) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }

    /* connection g goes to thread g % nthreads; its pattern depends on g only */
    size_t next = 0;
    for (size_t t = 0; t < nthreads; t++) {
        struct worker *w = calloc(1, sizeof *w);
        if (!w || !(w->h = calloc(1, sizeof *w->h))) {
            fprintf(stderr, "loadgen: out of memory\n");
            return 1;
        }
        ws[t] = w;
        w->o = &o;
        w->addr = res->ai_addr;
        w->addrlen = res->ai_addrlen;
        w->spread = o.spread && res->ai_family == AF_INET &&
                    (ntohl(((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr) >> 24) == 127;
        w->msg_size = msg_size;
        w->inflight = inflight;
        w->n = (size_t)o.connections / nthreads + (t < (size_t)o.connections % nthreads);
        w->c = conns + next;
        w->starts = starts + next * inflight;
        for (size_t j = 0; j < w->n; j++) {
            struct lconn *c = &w->c[j];
            uint64_t g = t + j * nthreads;
            c->fd = -1;
            c->state = CS_PENDING;
            c->id = (uint32_t)g;
            c->seed = mix64(g + 0x5eedULL);
            c->starts = w->starts + j * inflight;
            c->when = 0;
        }
        next += w->n;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep < 0) {
            perror("loadgen: epoll_create1");
            return 1;
        }
    }

    pthread_barrier_init(&g_barrier, NULL, (unsigned)nthreads);
    g_connect_deadline = now_ns() + (int64_t)(o.connect_budget * 1000.0) * NS_PER_MS;
    for (size_t t = 1; t < nthreads; t++) {
        if (pthread_create(&ws[t]->thread, NULL, worker_main, ws[t]) != 0) {
            fprintf(stderr, "loadgen: cannot start thread\n");
            return 1;
        }
    }
    worker_main(ws[0]);
    for (size_t t = 1; t < nthreads; t++)
        pthread_join(ws[t]->thread, NULL);

    struct worker sum = { 0 };
    struct hist *h = ws[0]->h;
    int last_errno = 0;
    for (size_t t = 0; t < nthreads; t++) {
        struct worker *w = ws[t];
        if (t > 0)
            hist_merge(h, w->h);
        sum.messages += w->messages;
        sum.errors += w->errors;
        sum.mismatches += w->mismatches;
        sum.excess += w->excess;
        sum.lost += w->lost;
        sum.connect_failures += w->connect_failures;
        sum.held += w->held;
        sum.echo_ok += w->echo_ok;
        sum.echo_failed += w->echo_failed;
        if (w->last_connect_errno)
            last_errno = w->last_connect_errno;
        if (w->tls_error[0])
            fprintf(stderr, "loadgen: %s\n", w->tls_error);
    }
    if (sum.connect_failures)
        fprintf(stderr, "loadgen: %" PRIu64 " connections could not be opened (last error: %s)\n",
                sum.connect_failures, strerror(last_errno));

    int status;
    if (o.mode == MODE_PINGPONG) {
        /* nothing is measured when not a single connection could be opened */
        double secs = ws[0]->ran ? o.duration : 0.0;
        double rate = secs > 0 ? (double)sum.messages / secs : 0.0;
        double mbps = secs > 0 ? (double)sum.messages * (double)o.size / secs / 1e6 : 0.0;
        double p50 = (double)hist_quantile(h, 0.50) / 1e3;
        double p99 = (double)hist_quantile(h, 0.99) / 1e3;
        double p999 = (double)hist_quantile(h, 0.999) / 1e3;
        double pmax = (double)h->max / 1e3;
        if (o.json) {
            printf("{\"mode\":\"pingpong\",\"connections\":%ld,\"size\":%ld,\"inflight\":%ld,"
                   "\"duration_s\":%.3f,\"messages\":%" PRIu64 ",\"messages_per_s\":%.1f,"
                   "\"mb_per_s\":%.3f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
                   "\"max_us\":%.1f,\"errors\":%" PRIu64 ",\"mismatches\":%" PRIu64 ","
                   "\"lost_bytes\":%" PRIu64 ",\"excess_bytes\":%" PRIu64 ","
                   "\"connect_failures\":%" PRIu64 "}\n",
                   o.connections, o.size, o.inflight, secs, sum.messages, rate, mbps, p50, p99,
                   p999, pmax, sum.errors, sum.mismatches, sum.lost, sum.excess,
                   sum.connect_failures);
        } else {
            printf("pingpong: %ld connections, %ld-byte messages, %ld in flight each, %.3f s measured\n"
                   "messages: %" PRIu64 " (%.1f/s, %.3f MB/s)\n"
                   "latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n"
                   "errors %" PRIu64 "  mismatches %" PRIu64 "  lost_bytes %" PRIu64
                   "  excess_bytes %" PRIu64 "  connect_failures %" PRIu64 "\n",
                   o.connections, o.size, o.inflight, secs, sum.messages, rate, mbps, p50, p99,
                   p999, pmax, sum.errors, sum.mismatches, sum.lost, sum.excess,
                   sum.connect_failures);
        }
        status = sum.errors + sum.mismatches + sum.lost + sum.excess + sum.connect_failures ? 1 : 0;
    } else {
        if (o.json) {
            printf("{\"mode\":\"idle\",\"connections\":%ld,\"held\":%" PRIu64 ",\"echo_ok\":%" PRIu64
                   ",\"echo_failed\":%" PRIu64 ",\"connect_failures\":%" PRIu64 "}\n",
                   o.connections, sum.held, sum.echo_ok, sum.echo_failed, sum.connect_failures);
        } else {
            printf("idle: %ld connections, held %" PRIu64 ", echo ok %" PRIu64 ", echo failed %" PRIu64
                   ", connect failures %" PRIu64 "\n",
                   o.connections, sum.held, sum.echo_ok, sum.echo_failed, sum.connect_failures);
        }
        status = sum.echo_failed + sum.connect_failures ? 1 : 0;
    }
    fflush(stdout);

    for (size_t t = 0; t < nthreads; t++) {
        close(ws[t]->ep);
        free(ws[t]->h);
        free(ws[t]);
    }
    free(ws);
    free(conns);
    free(starts);
    freeaddrinfo(res);
#ifdef LOADGEN_TLS
    if (g_tls)
        SSL_CTX_free(g_tls);
#endif
    pthread_barrier_destroy(&g_barrier);
    return status;
}
