/*
 * pong: echoes every message of PING_URI on PONG_URI until ping's stop
 * message (type 2), for ping.c. With "claim", echoes through
 * conduit_publication_try_claim (written in place) instead of offer.
 *
 *   pong PING_URI PONG_URI [claim]
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
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { TYPE_STOP = 2 };

/* Gives up when ping makes no progress for this long. */
static const uint64_t STALL_NS = 30ull * 1000 * 1000 * 1000;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct pong {
    conduit_publication *pub;
    int use_claim;
    int stop;
    int failed;
};

static void on_ping(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    struct pong *p = user;
    if (type_id == TYPE_STOP) {
        p->stop = 1;
        return;
    }
    /* The clock is read only once an offer was refused: on the echo's path
     * it would cost a clock read per round trip. */
    uint64_t start = 0;
    for (;;) {
        int64_t rc;
        if (p->use_claim) {
            conduit_claim c = CONDUIT_CLAIM_INIT;
            rc = conduit_publication_try_claim(p->pub, type_id, len, &c);
            if (rc == 0) {
                if (len > 0) memcpy(c.data, data, len);
                rc = conduit_claim_commit(&c);
                if (rc == 0) return;
            }
        } else {
            rc = conduit_publication_offer(p->pub, type_id, data, len);
            if (rc >= 0) return;
        }
        if (start == 0) start = now_ns();
        if ((rc != CONDUIT_BACK_PRESSURED && rc != CONDUIT_NOT_CONNECTED) ||
            now_ns() - start > STALL_NS) {
            fprintf(stderr, "pong: echo failed (%s): %s\n", conduit_status_string((int)rc),
                    conduit_last_error());
            p->failed = 1;
            p->stop = 1;
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PING_URI PONG_URI [claim]\n", argv[0]);
        return 2;
    }
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(1, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) perror("pong: sched_setaffinity");
    }
    conduit_subscription *sub = conduit_subscription_open(argv[1]);
    if (!sub) {
        fprintf(stderr, "pong: conduit_subscription_open: %s\n", conduit_last_error());
        return 1;
    }
    struct pong p = {conduit_publication_open(argv[2]), argc > 3 && strcmp(argv[3], "claim") == 0,
                     0, 0};
    if (!p.pub) {
        fprintf(stderr, "pong: conduit_publication_open: %s\n", conduit_last_error());
        return 1;
    }
    /* When the current wait began, read only every 4096 empty polls (0: not
     * yet): no clock read on the latency path. */
    uint64_t last = 0;
    for (unsigned spins = 1; !p.stop; spins++) {
        /* One message per poll (ping sends one at a time): looking for a
         * second would touch a cache line ping is about to write. */
        int n = conduit_subscription_poll(sub, on_ping, &p, 1);
        if (n < 0) {
            fprintf(stderr, "pong: poll (%s): %s\n", conduit_status_string(n), conduit_last_error());
            return 1;
        }
        if (n == 0) CPU_RELAX();
        if (n > 0) {
            spins = 0;
            last = 0;
        } else if (spins % 4096 == 0) {
            if (last == 0) {
                last = now_ns();
            } else if (now_ns() - last > STALL_NS) {
                fprintf(stderr, "pong: nothing from ping for 30 s\n");
                return 1;
            }
        }
    }
    conduit_publication_close(p.pub);
    conduit_subscription_close(sub);
    return p.failed;
}
