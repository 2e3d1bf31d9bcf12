/*
 * interop: one side of a C <-> other-language exchange, for the system tests.
 *
 *   interop publish URI N     offers N messages (even ones through claims),
 *                             then flushes and closes
 *   interop subscribe URI N   receives N messages and checks every one
 *
 * Message k: type id 1000 + k % 7, length k % 97 (0 included), byte j equal
 * to (k * 31 + j) & 0xff. Both sides give up after 60 s without progress.
 */
#define _GNU_SOURCE
#include "conduit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint64_t STALL_NS = 60ull * 1000 * 1000 * 1000;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t type_of(uint64_t k) { return 1000u + (uint32_t)(k % 7); }
static size_t len_of(uint64_t k) { return (size_t)(k % 97); }
static uint8_t byte_of(uint64_t k, size_t j) { return (uint8_t)((k * 31 + j) & 0xff); }

static int publish(const char *uri, uint64_t n) {
    conduit_publication *p = conduit_publication_open(uri);
    if (!p) {
        fprintf(stderr, "interop: open %s: %s\n", uri, conduit_last_error());
        return 1;
    }
    uint8_t buf[128];
    for (uint64_t k = 0; k < n; k++) {
        size_t len = len_of(k);
        for (size_t j = 0; j < len; j++) buf[j] = byte_of(k, j);
        uint64_t start = now_ns();
        for (;;) {
            long long rc;
            if (k % 2 == 0) {
                conduit_claim c = CONDUIT_CLAIM_INIT;
                rc = conduit_publication_try_claim(p, type_of(k), len, &c);
                if (rc == 0) {
                    if (len > 0) memcpy(c.data, buf, len);
                    rc = conduit_claim_commit(&c);
                }
            } else {
                rc = conduit_publication_offer(p, type_of(k), buf, len);
                if (rc > 0) rc = 0;
            }
            if (rc == 0) break;
            if (rc != CONDUIT_BACK_PRESSURED && rc != CONDUIT_NOT_CONNECTED) {
                fprintf(stderr, "interop: message %llu: %s: %s\n", (unsigned long long)k,
                        conduit_status_string((int)rc), conduit_last_error());
                return 1;
            }
            if (now_ns() - start > STALL_NS) {
                fprintf(stderr, "interop: message %llu: no room for 60 s\n", (unsigned long long)k);
                return 1;
            }
        }
    }
    int rc = conduit_publication_flush(p, 60000);
    if (rc != 0) {
        fprintf(stderr, "interop: flush: %s: %s\n", conduit_status_string(rc), conduit_last_error());
        return 1;
    }
    /* A group publication saw its receivers join (0 for one host). */
    conduit_receiver_event e = CONDUIT_RECEIVER_EVENT_INIT;
    int joined = 0;
    while ((rc = conduit_publication_next_receiver_event(p, &e)) == 1) {
        if (e.kind == CONDUIT_RECEIVER_EVENT_JOINED) joined++;
    }
    if (rc != 0) {
        fprintf(stderr, "interop: receiver events: %s: %s\n", conduit_status_string(rc),
                conduit_last_error());
        return 1;
    }
    conduit_publication_close(p);
    printf("published %llu\n", (unsigned long long)n);
    printf("receivers joined %d\n", joined);
    return 0;
}

struct check {
    uint64_t next;
    int bad;
};

static void verify(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    struct check *c = user;
    uint64_t k = c->next++;
    if (c->bad) return;
    if (type_id != type_of(k) || len != len_of(k)) {
        fprintf(stderr, "interop: message %llu: type %u len %zu, expected type %u len %zu\n",
                (unsigned long long)k, type_id, len, type_of(k), len_of(k));
        c->bad = 1;
        return;
    }
    for (size_t j = 0; j < len; j++) {
        if (data[j] != byte_of(k, j)) {
            fprintf(stderr, "interop: message %llu: byte %zu differs\n", (unsigned long long)k, j);
            c->bad = 1;
            return;
        }
    }
}

static int subscribe(const char *uri, uint64_t n) {
    conduit_subscription *s = conduit_subscription_open(uri);
    if (!s) {
        fprintf(stderr, "interop: open %s: %s\n", uri, conduit_last_error());
        return 1;
    }
    printf("subscribed\n");
    fflush(stdout);
    struct check c = {0, 0};
    uint64_t last = now_ns();
    while (c.next < n && !c.bad) {
        int got = conduit_subscription_poll_timeout(s, verify, &c, 64, 10);
        if (got == CONDUIT_CLOSED) {
            fprintf(stderr, "interop: publication closed after %llu of %llu\n",
                    (unsigned long long)c.next, (unsigned long long)n);
            return 1;
        }
        if (got < 0) {
            fprintf(stderr, "interop: poll: %s: %s\n", conduit_status_string(got), conduit_last_error());
            return 1;
        }
        if (got > 0) {
            last = now_ns();
        } else if (now_ns() - last > STALL_NS) {
            fprintf(stderr, "interop: stalled at %llu of %llu\n", (unsigned long long)c.next,
                    (unsigned long long)n);
            return 1;
        }
    }
    conduit_subscription_close(s);
    if (c.bad) return 1;
    printf("received %llu\n", (unsigned long long)c.next);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s publish|subscribe URI N\n", argv[0]);
        return 2;
    }
    uint64_t n = strtoull(argv[3], NULL, 10);
    if (strcmp(argv[1], "publish") == 0) return publish(argv[2], n);
    if (strcmp(argv[1], "subscribe") == 0) return subscribe(argv[2], n);
    fprintf(stderr, "interop: unknown mode %s\n", argv[1]);
    return 2;
}
