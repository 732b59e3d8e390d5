/* The relay benchmark's watchers in C: N WebSocket clients on one epoll loop, so that on a machine
 * where the clients share the servers' cores they take as little of them as a client can.
 *
 *     watch HOST PORT PATH AUTH WATCHERS EVENTS TIMEOUT ISOLATED
 *
 * AUTH is the first frame to send ("" for none). Prints `connected` once every socket has its first
 * frame, `ready` once every socket has its warm-up event, then, once every socket has EVENTS more
 * events (or TIMEOUT seconds passed), one JSON line in the shape of bench/relay.py's `Seen`. With
 * EVENTS 0 it holds the sockets until its stdin closes. ISOLATED 1 runs it under SCHED_BATCH.
 *
 * Each read asks the kernel when its bytes arrived (SO_TIMESTAMPNS); every event frame of that read
 * gets that time, and the time of the read itself. An event frame is a text frame holding `"at":"`;
 * its latency is the arrival minus that timestamp (ISO 8601, UTC, microseconds).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER (1 << 18)

typedef struct {
    int fd;
    int upgraded, connected, warm, done;
    size_t used;
    long timed;
    unsigned char *buffer;
} watcher;

typedef struct {
    double arrived, read, at;
} receipt;

static receipt *receipts;
static long nreceipts, capacity;
static int closes[4096];
static int ncloses;
static double last_seen;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what) {
    fprintf(stderr, "watch: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void send_all(int fd, const unsigned char *data, size_t size) {
    while (size) {
        ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 1000);
                continue;
            }
            fail("send");
        }
        data += n, size -= (size_t)n;
    }
}

/* One masked client frame (payloads here are under 64 KiB). */
static void send_frame(int fd, int opcode, const unsigned char *data, size_t size) {
    unsigned char frame[8 + 65536];
    size_t head = 0;
    if (size > 65535) size = 65535;
    frame[head++] = 0x80 | opcode;
    if (size < 126) {
        frame[head++] = 0x80 | size;
    } else {
        frame[head++] = 0x80 | 126;
        frame[head++] = size >> 8;
        frame[head++] = size & 0xff;
    }
    uint32_t key = (uint32_t)random();
    unsigned char mask[4] = {key >> 24, key >> 16 & 0xff, key >> 8 & 0xff, key & 0xff};
    memcpy(frame + head, mask, 4);
    head += 4;
    for (size_t i = 0; i < size; i++) frame[head + i] = data[i] ^ mask[i % 4];
    send_all(fd, frame, head + size);
}

/* Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)"; -1 if it is not that. */
static double parse_at(const unsigned char *s, size_t size) {
    char text[40];
    struct tm tm = {0};
    if (size < 19 || size >= sizeof text) return -1;
    memcpy(text, s, size);
    text[size] = 0;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    double seconds = (double)timegm(&tm);
    if (size > 20 && text[19] == '.') {
        double scale = 0.1;
        for (size_t i = 20; i < size && text[i] >= '0' && text[i] <= '9'; i++, scale /= 10)
            seconds += (text[i] - '0') * scale;
    }
    return seconds;
}

static void record(double arrived, double read, double at) {
    if (nreceipts == capacity) {
        capacity = capacity ? capacity * 2 : 1 << 16;
        receipts = realloc(receipts, capacity * sizeof *receipts);
        if (!receipts) fail("realloc");
    }
    receipts[nreceipts++] = (receipt){arrived, read, at};
}

static void saw_text(watcher *w, const unsigned char *payload, size_t size, double arrived, double read, long events) {
    static const char key[] = "\"at\":\"";
    w->connected = 1;
    const unsigned char *at = memmem(payload, size, key, sizeof key - 1);
    if (!at || w->done) return; /* ready and position frames */
    if (!w->warm) {
        w->warm = 1;
        return;
    }
    const unsigned char *start = at + sizeof key - 1;
    const unsigned char *end = memchr(start, '"', size - (size_t)(start - payload));
    if (!end) return;
    record(arrived, read, parse_at(start, (size_t)(end - start)));
    last_seen = read;
    if (++w->timed >= events) w->done = 1;
}

static int poll_fd;

/* The socket ended (closed by the server, or failed): it counts as done and is no longer polled. */
static void finish(watcher *w) {
    w->connected = w->warm = w->done = 1;
    epoll_ctl(poll_fd, EPOLL_CTL_DEL, w->fd, NULL);
}

static void readable(watcher *w, long events, const char *auth) {
    char control[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = {w->buffer + w->used, BUFFER - w->used};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(w->fd, &msg, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        finish(w);
        return;
    }
    if (n == 0) {
        finish(w);
        return;
    }
    double read = now(), arrived = read;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            arrived = ts.tv_sec + ts.tv_nsec / 1e9;
        }
    }
    w->used += (size_t)n;
    size_t at = 0, size = w->used;
    unsigned char *b = w->buffer;
    if (!w->upgraded) {
        unsigned char *end = memmem(b, size, "\r\n\r\n", 4);
        if (!end) return;
        if (!memmem(b, (size_t)(end - b), " 101 ", 5)) {
            fprintf(stderr, "watch: no upgrade: %.200s\n", (char *)b);
            exit(2);
        }
        w->upgraded = 1;
        at = (size_t)(end - b) + 4;
        if (*auth) send_frame(w->fd, 0x1, (const unsigned char *)auth, strlen(auth));
    }
    while (size - at >= 2) {
        int opcode = b[at] & 0x0f;
        uint64_t length = b[at + 1] & 0x7f;
        size_t head = 2;
        if (length == 126) {
            if (size - at < 4) break;
            length = (uint64_t)b[at + 2] << 8 | b[at + 3];
            head = 4;
        } else if (length == 127) {
            if (size - at < 10) break;
            length = 0;
            for (int i = 0; i < 8; i++) length = length << 8 | b[at + 2 + i];
            head = 10;
        }
        if (size - at < head + length) break;
        unsigned char *payload = b + at + head;
        at += head + length;
        if (opcode == 0x1) {
            saw_text(w, payload, length, arrived, read, events);
        } else if (opcode == 0x9) {
            send_frame(w->fd, 0xA, payload, length);
        } else if (opcode == 0x8) {
            if (ncloses < 4096) closes[ncloses++] = length >= 2 ? payload[0] << 8 | payload[1] : 1005;
            finish(w);
            return;
        }
    }
    if (at == 0 && size == BUFFER) {
        fprintf(stderr, "watch: a frame larger than %d bytes\n", BUFFER);
        exit(2);
    }
    memmove(b, b + at, size - at);
    w->used = size - at;
}

static int open_socket(const char *host, const char *port, const char *path) {
    struct addrinfo hints = {0}, *found;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &found) != 0) fail("getaddrinfo");
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0) fail("connect");
    freeaddrinfo(found);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    char request[2048];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port);
    send_all(fd, (const unsigned char *)request, (size_t)n);
    return fd;
}

enum { CONNECTED, WARM, DONE };

static int reached(const watcher *w, int stage) {
    return stage == CONNECTED ? w->connected : stage == WARM ? w->warm : w->done;
}

static void until(watcher *ws, int count, int stage, double timeout, long events, const char *auth) {
    double deadline = now() + timeout;
    struct epoll_event ready[256];
    int pending = count;
    while (pending && now() < deadline) {
        int n = epoll_wait(poll_fd, ready, 256, 100);
        for (int i = 0; i < n; i++) readable(&ws[ready[i].data.u32], events, auth);
        pending = 0;
        for (int i = 0; i < count; i++) pending += !reached(&ws[i], stage);
    }
}

static void say(const char *line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: watch HOST PORT PATH AUTH WATCHERS EVENTS TIMEOUT ISOLATED\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *path = argv[3], *auth = argv[4];
    int count = atoi(argv[5]);
    long events = atol(argv[6]);
    double timeout = atof(argv[7]);
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    if (atoi(argv[8])) {
        struct sched_param param = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) fail("sched_setscheduler");
    }
    srandom((unsigned)getpid() ^ (unsigned)time(NULL));
    watcher *ws = calloc((size_t)count, sizeof *ws);
    poll_fd = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        ws[i].buffer = malloc(BUFFER);
        ws[i].fd = open_socket(host, port, path);
    }
    for (int i = 0; i < count; i++) {
        int flags = 1;
        if (ioctl(ws[i].fd, FIONBIO, &flags) != 0) fail("FIONBIO");
        struct epoll_event e = {EPOLLIN, {.u32 = (uint32_t)i}};
        if (epoll_ctl(poll_fd, EPOLL_CTL_ADD, ws[i].fd, &e) != 0) fail("epoll_ctl");
    }
    until(ws, count, CONNECTED, 120.0, events, auth);
    say("connected");
    if (events == 0) {
        char sink[4096];
        while (read(0, sink, sizeof sink) > 0) {
        }
        return 0;
    }
    until(ws, count, WARM, 120.0, events, auth);
    say("ready");
    double cpu = cpu_seconds();
    until(ws, count, DONE, timeout, events, auth);
    cpu = cpu_seconds() - cpu;
    for (int i = 0; i < count; i++) close(ws[i].fd);
    printf("{\"received\":%ld,\"latencies_ms\":[", nreceipts);
    for (long i = 0; i < nreceipts; i++)
        printf(i ? ",%.4f" : "%.4f", (receipts[i].arrived - receipts[i].at) * 1e3);
    printf("],\"read_latencies_ms\":[");
    for (long i = 0; i < nreceipts; i++) printf(i ? ",%.4f" : "%.4f", (receipts[i].read - receipts[i].at) * 1e3);
    printf("],\"last\":%.6f,\"cpu\":%.6f,\"closes\":[", last_seen, cpu);
    for (int i = 0; i < ncloses; i++) printf(i ? ",%d" : "%d", closes[i]);
    printf("]}");
    fflush(stdout);
    return 0;
}
