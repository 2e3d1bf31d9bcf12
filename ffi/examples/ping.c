/*
 * ping: round-trip latency over any conduit channel, against pong.
 *
 *   pong PING_URI PONG_URI [claim]
 *   ping PING_URI PONG_URI [COUNT [WARMUP [SIZE]]]
 *
 * ping offers a SIZE-byte message (type 1, a sequence number first) on
 * PING_URI; pong echoes it on PONG_URI; ping waits for the echo, busy-polling,
 * and records the round trip. After WARMUP + COUNT round trips it sends a stop
 * message (type 2) and prints p50/p90/p99/p99.9/p99.99/max in nanoseconds.
 * It runs pinned to CPU 0 (pong to CPU 1) when the machine has two CPUs.
 *
 *   ./pong shm:ping shm:pong &  ./ping shm:ping shm:pong 100000
 */
#define _GNU_SOURCE
#include "conduit.h"

#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* Tells the core this is a spin-wait (as Rust's std::hint::spin_loop). */
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { TYPE_PING = 1, TYPE_STOP = 2, MAX_SIZE = 4096 };

/* Gives up when the other side makes no progress for this long. */
static const uint64_t STALL_NS = 30ull * 1000 * 1000 * 1000;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin_to(int cpu) {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("ping: sched_setaffinity (not pinned)");
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t percentile(const uint64_t *sorted, size_t n, double p) {
    size_t i = (size_t)(p / 100.0 * (double)n);
    if (i >= n) i = n - 1;
    return sorted[i];
}

struct echo {
    uint64_t expect; /* sequence number awaited */
    int got;
};

static void on_echo(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    struct echo *e = user;
    uint64_t seq;
    if (type_id != TYPE_PING || len < sizeof seq) return;
    memcpy(&seq, data, sizeof seq);
    if (seq == e->expect) e->got = 1;
}

static int fail(const char *what, long long rc) {
    fprintf(stderr, "ping: %s failed (%s): %s\n", what, conduit_status_string((int)rc),
            conduit_last_error());
    return 1;
}

/* Offers until accepted; retries while back-pressured or not yet connected. */
static int offer_retry(conduit_publication *p, uint32_t type, const void *buf, size_t len) {
    /* The clock is read only once an offer was refused: not on the latency path. */
    uint64_t start = 0;
    for (;;) {
        int64_t rc = conduit_publication_offer(p, type, buf, len);
        if (rc >= 0) return 0;
        if (rc != CONDUIT_BACK_PRESSURED && rc != CONDUIT_NOT_CONNECTED) return fail("offer", rc);
        if (start == 0) start = now_ns();
        if (now_ns() - start > STALL_NS) {
            fprintf(stderr, "ping: no subscriber made room for 30 s (is pong running?)\n");
            return 1;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PING_URI PONG_URI [COUNT [WARMUP [SIZE]]]\n", argv[0]);
        return 2;
    }
    size_t count = argc > 3 ? strtoul(argv[3], NULL, 10) : 100000;
    size_t warmup = argc > 4 ? strtoul(argv[4], NULL, 10) : count / 10 + 100;
    size_t size = argc > 5 ? strtoul(argv[5], NULL, 10) : 32;
    if (count == 0 || size < sizeof(uint64_t) || size > MAX_SIZE) {
        fprintf(stderr, "ping: COUNT must be at least 1 and SIZE 8 to %d\n", MAX_SIZE);
        return 2;
    }
    pin_to(0);

    conduit_subscription *sub = conduit_subscription_open(argv[2]);
    if (!sub) return fail("conduit_subscription_open", CONDUIT_INVALID_ARGUMENT);
    conduit_publication *pub = conduit_publication_open(argv[1]);
    if (!pub) return fail("conduit_publication_open", CONDUIT_INVALID_ARGUMENT);

    uint64_t *samples = malloc(count * sizeof *samples);
    uint8_t buf[MAX_SIZE];
    memset(buf, 0xab, sizeof buf);
    if (!samples) return 2;
    memset(samples, 0, count * sizeof *samples); /* no page faults while measuring */

    struct echo echo = {0, 0};
    for (size_t i = 0; i < warmup + count; i++) {
        uint64_t seq = i + 1;
        memcpy(buf, &seq, sizeof seq);
        echo.expect = seq;
        echo.got = 0;
        uint64_t t0 = now_ns();
        if (offer_retry(pub, TYPE_PING, buf, size) != 0) return 1;
        for (unsigned spins = 1; !echo.got; spins++) {
            /* One message per poll: looking for a second one would touch the
             * next record's cache line, which pong is about to write. */
            int n = conduit_subscription_poll(sub, on_echo, &echo, 1);
            if (n < 0) return fail("poll", n);
            if (n == 0) CPU_RELAX();
            if (n == 0 && spins % 4096 == 0 && now_ns() - t0 > STALL_NS) {
                fprintf(stderr, "ping: no echo of %llu for 30 s\n", (unsigned long long)seq);
                return 1;
            }
        }
        uint64_t t1 = now_ns();
        if (i >= warmup) samples[i - warmup] = t1 - t0;
    }
    if (offer_retry(pub, TYPE_STOP, NULL, 0) != 0) return 1;

    qsort(samples, count, sizeof *samples, cmp_u64);
    printf("ping-pong over %s / %s: %zu round trips of %zu bytes (after %zu warm-up)\n",
           argv[1], argv[2], count, size, warmup);
    printf("rtt_ns p50=%llu p90=%llu p99=%llu p99.9=%llu p99.99=%llu max=%llu\n",
           (unsigned long long)percentile(samples, count, 50),
           (unsigned long long)percentile(samples, count, 90),
           (unsigned long long)percentile(samples, count, 99),
           (unsigned long long)percentile(samples, count, 99.9),
           (unsigned long long)percentile(samples, count, 99.99),
           (unsigned long long)samples[count - 1]);
    free(samples);
    conduit_publication_close(pub);
    conduit_subscription_close(sub);
    return 0;
}
