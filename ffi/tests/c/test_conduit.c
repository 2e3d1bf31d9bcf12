/*
 * test_conduit: the C ABI from C. Bad calls (each code and message),
 * claims, zero-length messages, round trips, closing from a handler,
 * thread-local errors.
 *
 *   test_conduit DIR     (DIR: an existing directory for the shm rings)
 *
 * Prints one line per failed check and "N passed, N failed"; exits 1 on any
 * failure. Built with -std=c11 -Wall -Wextra -Wpedantic -Werror, and under
 * -fsanitize=address,undefined.
 */
#define _GNU_SOURCE
#include "conduit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            passed++;                                                                \
        } else {                                                                     \
            failed++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s (last error: \"%s\")\n", __FILE__, __LINE__, \
                    #cond, conduit_last_error());                                    \
        }                                                                            \
    } while (0)

/* The call returned `code` and the thread's last error mentions `needle`. */
#define CHECK_ERR(rc, code, needle)                                                  \
    do {                                                                             \
        long long rc_ = (long long)(rc);                                             \
        CHECK(rc_ == (code));                                                        \
        CHECK(strstr(conduit_last_error(), (needle)) != NULL);                       \
    } while (0)

static char dir[512];

static void uri(char *out, size_t cap, const char *name, const char *extra) {
    snprintf(out, cap, "shm:%s?dir=%s%s", name, dir, extra ? extra : "");
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct inbox {
    int count;
    uint32_t type_id[64];
    size_t len[64];
    uint8_t data[64][256];
};

static void collect(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    struct inbox *in = user;
    if (in->count >= 64) return;
    in->type_id[in->count] = type_id;
    in->len[in->count] = len;
    if (len > 0) memcpy(in->data[in->count], data, len < 256 ? len : 256);
    in->count++;
}

static void ignore(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    (void)user;
    (void)type_id;
    (void)data;
    (void)len;
}

/* Polls `s` into `in` until it holds `want` messages (or 10 s pass). */
static void poll_until(conduit_subscription *s, struct inbox *in, int want) {
    uint64_t deadline = now_ms() + 10000;
    while (in->count < want && now_ms() < deadline) {
        int n = conduit_subscription_poll(s, collect, in, 64);
        if (n < 0) {
            fprintf(stderr, "poll failed: %s\n", conduit_last_error());
            return;
        }
    }
}

/* Opens a connected pair on channel `name`. */
static int open_pair(const char *name, conduit_publication **p, conduit_subscription **s) {
    char u[1024];
    uri(u, sizeof u, name, "&capacity=64k");
    *s = conduit_subscription_open(u);
    *p = conduit_publication_open(u);
    if (!*s || !*p) {
        fprintf(stderr, "open %s failed: %s\n", u, conduit_last_error());
        return 0;
    }
    uint64_t deadline = now_ms() + 10000;
    while (conduit_publication_is_connected(*p) != 1) {
        if (conduit_subscription_poll(*s, ignore, NULL, 1) < 0 || now_ms() > deadline) {
            fprintf(stderr, "%s never connected: %s\n", name, conduit_last_error());
            return 0;
        }
    }
    return 1;
}

static void test_static_strings(void) {
    CHECK(conduit_version() != NULL && strlen(conduit_version()) >= 5);
    CHECK(strcmp(conduit_status_string(CONDUIT_OK), "CONDUIT_OK") == 0);
    CHECK(strcmp(conduit_status_string(123), "CONDUIT_OK") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_BACK_PRESSURED), "CONDUIT_BACK_PRESSURED") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_NOT_CONNECTED), "CONDUIT_NOT_CONNECTED") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_CLOSED), "CONDUIT_CLOSED") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_INVALID_ARGUMENT), "CONDUIT_INVALID_ARGUMENT") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_MESSAGE_TOO_LARGE), "CONDUIT_MESSAGE_TOO_LARGE") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_PEER_GONE), "CONDUIT_PEER_GONE") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_CORRUPT), "CONDUIT_CORRUPT") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_IO_ERROR), "CONDUIT_IO_ERROR") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_VERSION_MISMATCH), "CONDUIT_VERSION_MISMATCH") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_TIMED_OUT), "CONDUIT_TIMED_OUT") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_INTERNAL), "CONDUIT_INTERNAL") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_PUBLISHER_ALIVE), "CONDUIT_PUBLISHER_ALIVE") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_NO_FREE_SLOT), "CONDUIT_NO_FREE_SLOT") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_LAYOUT_VERSION), "CONDUIT_LAYOUT_VERSION") == 0);
    CHECK(strcmp(conduit_status_string(CONDUIT_NOT_A_CHANNEL), "CONDUIT_NOT_A_CHANNEL") == 0);
    CHECK(strcmp(conduit_status_string(-1000), "CONDUIT_UNKNOWN_STATUS") == 0);
}

/* Bad calls that need no channel: NULL handles and arguments, bad URIs. */
static void test_bad_calls_without_channel(void) {
    conduit_claim zero = CONDUIT_CLAIM_INIT;
    conduit_counters counters = CONDUIT_COUNTERS_INIT;
    uint8_t buf[8] = {0};

    CHECK(conduit_publication_open(NULL) == NULL);
    CHECK(strstr(conduit_last_error(), "conduit_publication_open: uri is NULL") != NULL);
    CHECK(conduit_last_status() == CONDUIT_INVALID_ARGUMENT);
    CHECK(conduit_subscription_open(NULL) == NULL);
    CHECK(strstr(conduit_last_error(), "conduit_subscription_open: uri is NULL") != NULL);

    CHECK(conduit_publication_open("shm:bad\xff\xfe") == NULL);
    CHECK(strstr(conduit_last_error(), "not valid UTF-8") != NULL);
    CHECK(conduit_subscription_open("shm:\xc3") == NULL);
    CHECK(strstr(conduit_last_error(), "not valid UTF-8") != NULL);

    CHECK(conduit_publication_open("bogus://x") == NULL);
    CHECK(strstr(conduit_last_error(), "invalid channel URI") != NULL);
    CHECK(conduit_publication_open("shm:") == NULL);
    CHECK(strstr(conduit_last_error(), "invalid channel URI") != NULL);
    CHECK(conduit_publication_open("shm:../etc") == NULL);
    CHECK(strstr(conduit_last_error(), "invalid channel URI") != NULL);
    CHECK(conduit_subscription_open("shm:x?nonsense=1") == NULL);
    CHECK(strstr(conduit_last_error(), "nonsense") != NULL);
    CHECK(conduit_publication_open("shm:x?capacity=1000") == NULL);
    CHECK(strstr(conduit_last_error(), "capacity") != NULL);
    CHECK(conduit_last_status() == CONDUIT_INVALID_ARGUMENT);

    char *long_uri = malloc(4096);
    CHECK(long_uri != NULL);
    if (long_uri) {
        memset(long_uri, 'a', 4095);
        memcpy(long_uri, "shm:", 4);
        long_uri[4095] = '\0';
        CHECK(conduit_publication_open(long_uri) == NULL);
        CHECK(strstr(conduit_last_error(), "longer than 1024 bytes") != NULL);
        free(long_uri);
    }

    CHECK_ERR(conduit_publication_offer(NULL, 1, buf, sizeof buf), CONDUIT_INVALID_ARGUMENT,
              "conduit_publication_offer: publication is NULL");
    CHECK_ERR(conduit_publication_try_claim(NULL, 1, 8, &zero), CONDUIT_INVALID_ARGUMENT,
              "conduit_publication_try_claim: publication is NULL");
    CHECK(zero.data == NULL && zero.private_publication == NULL);
    CHECK_ERR(conduit_publication_flush(NULL, 0), CONDUIT_INVALID_ARGUMENT, "publication is NULL");
    CHECK_ERR(conduit_publication_is_connected(NULL), 0, "publication is NULL");
    CHECK_ERR(conduit_publication_max_message_len(NULL), CONDUIT_INVALID_ARGUMENT,
              "publication is NULL");
    CHECK_ERR(conduit_publication_counters(NULL, &counters), CONDUIT_INVALID_ARGUMENT,
              "publication is NULL");
    CHECK(conduit_publication_driver(NULL) == NULL);
    CHECK_ERR(conduit_subscription_poll(NULL, ignore, NULL, 1), CONDUIT_INVALID_ARGUMENT,
              "conduit_subscription_poll: subscription is NULL");
    CHECK_ERR(conduit_subscription_poll_timeout(NULL, ignore, NULL, 1, 0),
              CONDUIT_INVALID_ARGUMENT, "subscription is NULL");
    CHECK_ERR(conduit_subscription_is_connected(NULL), 0, "subscription is NULL");
    CHECK_ERR(conduit_subscription_counters(NULL, &counters), CONDUIT_INVALID_ARGUMENT,
              "subscription is NULL");
    CHECK(conduit_subscription_driver(NULL) == NULL);

    CHECK_ERR(conduit_claim_commit(NULL), CONDUIT_INVALID_ARGUMENT,
              "conduit_claim_commit: claim is NULL");
    CHECK_ERR(conduit_claim_abort(NULL), CONDUIT_INVALID_ARGUMENT, "claim is NULL");
    CHECK_ERR(conduit_claim_commit(&zero), CONDUIT_INVALID_ARGUMENT, "claim is not open");
    CHECK_ERR(conduit_claim_abort(&zero), CONDUIT_INVALID_ARGUMENT, "claim is not open");

    /* NULL is a no-op for close. */
    conduit_publication_close(NULL);
    conduit_publication_close_linger(NULL, 5);
    conduit_subscription_close(NULL);
}

static void *fail_on_other_thread(void *arg) {
    (void)arg;
    CHECK(conduit_publication_open(NULL) == NULL);
    CHECK(strstr(conduit_last_error(), "uri is NULL") != NULL);
    return NULL;
}

/* A failed open returns NULL and leaves its status in conduit_last_status(). */
static void test_open_failure_status(void) {
    char u[1024];
    uri(u, sizeof u, "alive", "&capacity=64k&subscribers=1");
    conduit_publication *p = conduit_publication_open(u);
    CHECK(p != NULL);
    CHECK(conduit_publication_open(u) == NULL);
    CHECK(conduit_last_status() == CONDUIT_PUBLISHER_ALIVE);
    CHECK(strstr(conduit_last_error(), "live publisher") != NULL);
    conduit_subscription *s = conduit_subscription_open(u);
    CHECK(s != NULL);
    CHECK(conduit_subscription_open(u) == NULL);
    CHECK(conduit_last_status() == CONDUIT_NO_FREE_SLOT);
    conduit_subscription_close(s);
    conduit_publication_close(p);
}

static void test_last_error_is_per_thread(void) {
    CHECK(conduit_claim_commit(NULL) == CONDUIT_INVALID_ARGUMENT);
    const char *mine = conduit_last_error();
    CHECK(strstr(mine, "conduit_claim_commit") != NULL);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_on_other_thread, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    /* The other thread's failure did not touch this thread's message. */
    CHECK(strstr(conduit_last_error(), "conduit_claim_commit: claim is NULL") != NULL);
    /* A successful call leaves the message alone. */
    CHECK(conduit_version() != NULL);
    CHECK(strstr(conduit_last_error(), "conduit_claim_commit") != NULL);
}

/* Bad calls on live handles, and claims. */
static void test_claims_and_bad_calls_on_handles(void) {
    conduit_publication *p;
    conduit_subscription *s;
    if (!open_pair("claims", &p, &s)) {
        failed++;
        return;
    }
    uint8_t buf[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct inbox in;
    memset(&in, 0, sizeof in);

    CHECK(strcmp(conduit_publication_driver(p), "shm") == 0);
    CHECK(strcmp(conduit_subscription_driver(s), "shm") == 0);
    int64_t max = conduit_publication_max_message_len(p);
    CHECK(max > 0);

    CHECK_ERR(conduit_publication_offer(p, 1, NULL, 5), CONDUIT_INVALID_ARGUMENT, "data is NULL");
    CHECK_ERR(conduit_publication_offer(p, 1, buf, SIZE_MAX), CONDUIT_INVALID_ARGUMENT,
              "impossible");
    CHECK_ERR(conduit_publication_offer(p, 1, buf, (size_t)max + 1), CONDUIT_MESSAGE_TOO_LARGE,
              "exceeds");
    conduit_claim c = CONDUIT_CLAIM_INIT;
    CHECK_ERR(conduit_publication_try_claim(p, 1, SIZE_MAX, &c), CONDUIT_INVALID_ARGUMENT,
              "impossible");
    CHECK_ERR(conduit_publication_try_claim(p, 1, (size_t)max + 1, &c), CONDUIT_MESSAGE_TOO_LARGE,
              "exceeds");
    CHECK(c.data == NULL && c.private_publication == NULL);
    CHECK_ERR(conduit_publication_try_claim(p, 1, 8, NULL), CONDUIT_INVALID_ARGUMENT,
              "out is NULL");
    CHECK_ERR(conduit_publication_flush(p, -1), CONDUIT_INVALID_ARGUMENT, "timeout_ms");
    CHECK_ERR(conduit_subscription_poll(s, NULL, NULL, 1), CONDUIT_INVALID_ARGUMENT,
              "handler is NULL");
    CHECK_ERR(conduit_subscription_poll(s, ignore, NULL, 0), CONDUIT_INVALID_ARGUMENT, "limit");
    CHECK_ERR(conduit_subscription_poll(s, ignore, NULL, -3), CONDUIT_INVALID_ARGUMENT, "limit");
    CHECK_ERR(conduit_subscription_poll_timeout(s, ignore, NULL, 1, -1), CONDUIT_INVALID_ARGUMENT,
              "timeout_ms");
    /* A subscription is not a publication. */
    CHECK_ERR(conduit_publication_offer((conduit_publication *)(void *)s, 1, buf, 1),
              CONDUIT_INVALID_ARGUMENT, "not a live publication");

    /* A claim: write in place, commit. */
    CHECK(conduit_publication_try_claim(p, 7, sizeof buf, &c) == 0);
    CHECK(c.data != NULL && c.len == sizeof buf);
    conduit_claim copy = c;
    /* While it is open, other calls on the publication are refused... */
    CHECK_ERR(conduit_publication_offer(p, 1, buf, 1), CONDUIT_INVALID_ARGUMENT, "claim is open");
    conduit_claim other = CONDUIT_CLAIM_INIT;
    CHECK_ERR(conduit_publication_try_claim(p, 1, 1, &other), CONDUIT_INVALID_ARGUMENT,
              "claim is open");
    CHECK_ERR(conduit_publication_try_claim(p, 1, 1, &c), CONDUIT_INVALID_ARGUMENT,
              "claim is open");
    CHECK(c.data != NULL); /* ... and the open claim was left as it was. */
    CHECK_ERR(conduit_publication_flush(p, 0), CONDUIT_INVALID_ARGUMENT, "claim is open");
    CHECK_ERR(conduit_publication_is_connected(p), 0, "claim is open");
    if (c.data) memcpy(c.data, buf, sizeof buf);
    CHECK(conduit_claim_commit(&c) == 0);
    CHECK(c.data == NULL && c.len == 0);
    /* Committing twice: through the same struct, then through a copy. */
    CHECK_ERR(conduit_claim_commit(&c), CONDUIT_INVALID_ARGUMENT, "claim is not open");
    CHECK_ERR(conduit_claim_commit(&copy), CONDUIT_INVALID_ARGUMENT, "already committed");
    CHECK_ERR(conduit_claim_abort(&copy), CONDUIT_INVALID_ARGUMENT, "already committed");

    /* An aborted claim publishes nothing; a copy of it cannot commit. */
    CHECK(conduit_publication_try_claim(p, 8, 4, &c) == 0);
    copy = c;
    CHECK(conduit_claim_abort(&c) == 0);
    CHECK_ERR(conduit_claim_commit(&copy), CONDUIT_INVALID_ARGUMENT, "already committed or aborted");

    /* A zero-length claim and a zero-length offer (NULL data allowed). */
    CHECK(conduit_publication_try_claim(p, 9, 0, &c) == 0);
    CHECK(c.len == 0);
    CHECK(conduit_claim_commit(&c) == 0);
    CHECK(conduit_publication_offer(p, 10, NULL, 0) >= 0);

    poll_until(s, &in, 3);
    CHECK(in.count == 3);
    CHECK(in.type_id[0] == 7 && in.len[0] == sizeof buf && memcmp(in.data[0], buf, sizeof buf) == 0);
    CHECK(in.type_id[1] == 9 && in.len[1] == 0);
    CHECK(in.type_id[2] == 10 && in.len[2] == 0);

    /* Close aborts an open claim. */
    CHECK(conduit_publication_try_claim(p, 11, 8, &c) == 0);
    conduit_publication_close(p);
    conduit_subscription_close(s);
}

static void test_round_trip(void) {
    conduit_publication *p;
    conduit_subscription *s;
    if (!open_pair("roundtrip", &p, &s)) {
        failed++;
        return;
    }
    struct inbox in;
    memset(&in, 0, sizeof in);
    uint8_t msg[200];
    int64_t last = 0;
    for (int i = 0; i < 20; i++) {
        size_t len = (size_t)(i * 10);
        for (size_t j = 0; j < len; j++) msg[j] = (uint8_t)(i + j);
        int64_t pos = conduit_publication_offer(p, 100 + (uint32_t)i, msg, len);
        CHECK(pos > last || (i == 0 && pos >= 0));
        last = pos;
    }
    CHECK(conduit_publication_flush(p, 0) == CONDUIT_TIMED_OUT ||
          conduit_publication_flush(p, 0) == 0);
    poll_until(s, &in, 20);
    CHECK(in.count == 20);
    for (int i = 0; i < in.count; i++) {
        size_t len = (size_t)(i * 10);
        CHECK(in.type_id[i] == 100 + (uint32_t)i);
        CHECK(in.len[i] == len);
        int same = 1;
        for (size_t j = 0; j < len; j++) same &= in.data[i][j] == (uint8_t)(i + j);
        CHECK(same);
    }
    CHECK(conduit_publication_flush(p, 5000) == 0);

    conduit_counters pc = CONDUIT_COUNTERS_INIT, sc = CONDUIT_COUNTERS_INIT;
    CHECK(conduit_publication_counters(p, &pc) == 0);
    CHECK(conduit_subscription_counters(s, &sc) == 0);
    CHECK(pc.sent == 20);
    CHECK(sc.received == 20);
    CHECK(pc.size == sizeof(conduit_counters) && sc.datagrams_received == 0);
    /* A struct whose size was not set is refused, not overrun. */
    conduit_counters unset;
    memset(&unset, 0, sizeof unset);
    CHECK_ERR(conduit_subscription_counters(s, &unset), CONDUIT_INVALID_ARGUMENT,
              "out->size is 0");
    CHECK(conduit_subscription_is_connected(s) == 1);

    /* poll_timeout returns 0 when nothing comes. */
    CHECK(conduit_subscription_poll_timeout(s, collect, &in, 8, 1) == 0);
    CHECK(conduit_publication_offer(p, 5, "x", 1) >= 0);
    in.count = 0;
    uint64_t deadline = now_ms() + 10000;
    while (in.count == 0 && now_ms() < deadline)
        CHECK(conduit_subscription_poll_timeout(s, collect, &in, 8, 100) >= 0);
    CHECK(in.count == 1 && in.type_id[0] == 5);

    conduit_publication_close(p);
    conduit_subscription_close(s);
}

struct closer {
    conduit_subscription *s;
    int calls;
};

static void close_from_handler(void *user, uint32_t type_id, const uint8_t *data, size_t len) {
    struct closer *c = user;
    (void)type_id;
    (void)data;
    (void)len;
    c->calls++;
    /* Other calls on the polled subscription are refused from here... */
    CHECK(conduit_subscription_poll(c->s, ignore, NULL, 1) == CONDUIT_INVALID_ARGUMENT);
    CHECK(strstr(conduit_last_error(), "inside this subscription's poll handler") != NULL);
    CHECK(conduit_subscription_is_connected(c->s) == 0);
    /* ... but close is allowed, and takes effect when poll returns. */
    conduit_subscription_close(c->s);
}

static void test_close_from_handler(void) {
    conduit_publication *p;
    conduit_subscription *s;
    if (!open_pair("closer", &p, &s)) {
        failed++;
        return;
    }
    for (int i = 0; i < 3; i++) CHECK(conduit_publication_offer(p, 1, &i, sizeof i) >= 0);
    struct closer c = {s, 0};
    uint64_t deadline = now_ms() + 10000;
    int n = 0;
    while (n == 0 && now_ms() < deadline) n = conduit_subscription_poll(s, close_from_handler, &c, 8);
    /* s is freed now; the handler was not called again after closing. */
    CHECK(n >= 1);
    CHECK(c.calls == 1);
    conduit_publication_close(p);
}

static void test_subscriber_count_and_wait(void) {
    char u[700];
    uri(u, sizeof u, "c_count", "&slow=evict&evict_after=50ms&history=4k");
    conduit_publication *p = conduit_publication_open(u);
    CHECK(p != NULL);
    if (!p) {
        fprintf(stderr, "open %s: %s\n", u, conduit_last_error());
        return;
    }
    CHECK(conduit_publication_subscriber_count(p) == 0);
    CHECK_ERR(conduit_publication_wait_for_subscribers(p, 1, 1000000), CONDUIT_TIMED_OUT,
              "timed out");
    CHECK_ERR(conduit_publication_wait_for_subscribers(p, 1, -1), CONDUIT_INVALID_ARGUMENT,
              "timeout_ns is -1");
    CHECK_ERR(conduit_publication_wait_for_subscribers(NULL, 1, 0), CONDUIT_INVALID_ARGUMENT,
              "publication is NULL");
    CHECK_ERR(conduit_publication_subscriber_count(NULL), CONDUIT_INVALID_ARGUMENT,
              "publication is NULL");
    CHECK(conduit_publication_wait_for_subscribers(p, 0, 0) == 0);
    char su[700];
    uri(su, sizeof su, "c_count", "&from=history");
    conduit_subscription *a = conduit_subscription_open(su);
    conduit_subscription *b = conduit_subscription_open(su);
    CHECK(a != NULL && b != NULL);
    CHECK(conduit_publication_wait_for_subscribers(p, 2, 5000000000LL) == 2);
    CHECK(conduit_publication_subscriber_count(p) == 2);
    conduit_subscription_close(b);
    CHECK(conduit_publication_subscriber_count(p) == 1);
    CHECK(strcmp(conduit_status_string(CONDUIT_EVICTED), "CONDUIT_EVICTED") == 0);
    CHECK(CONDUIT_EVICTED == -23);
    conduit_subscription_close(a);
    conduit_publication_close(p);
}

/* Receiver events: none for shm and for udp to one host; the struct is
 * size-first. */
static void test_receiver_events(void) {
    char u[1024];
    uri(u, sizeof u, "c_receivers", "&capacity=64k");
    conduit_publication *p = conduit_publication_open(u);
    conduit_publication *q = conduit_publication_open("udp://127.0.0.1:9?driver=socket");
    CHECK(p != NULL && q != NULL);
    if (!p || !q) return;
    conduit_receiver_event e = CONDUIT_RECEIVER_EVENT_INIT;
    CHECK(e.size == sizeof(conduit_receiver_event));
    CHECK(conduit_publication_next_receiver_event(p, &e) == 0);
    CHECK(conduit_publication_next_receiver_event(q, &e) == 0);
    CHECK(e.size == sizeof(conduit_receiver_event) && e.kind == 0);
    CHECK(conduit_publication_subscriber_count(q) == 0);
    conduit_receiver_event small = CONDUIT_RECEIVER_EVENT_INIT;
    small.size = 8;
    CHECK_ERR(conduit_publication_next_receiver_event(q, &small), CONDUIT_INVALID_ARGUMENT,
              "CONDUIT_RECEIVER_EVENT_INIT");
    CHECK_ERR(conduit_publication_next_receiver_event(q, NULL), CONDUIT_INVALID_ARGUMENT,
              "out is NULL");
    CHECK_ERR(conduit_publication_next_receiver_event(NULL, &e), CONDUIT_INVALID_ARGUMENT,
              "publication is NULL");
    CHECK(CONDUIT_RECEIVER_EVENT_JOINED == 1 && CONDUIT_RECEIVER_EVENT_GONE == 2);
    CHECK(CONDUIT_RECEIVER_GONE_TIMED_OUT == 1 && CONDUIT_RECEIVER_GONE_LEFT == 2);
    conduit_publication_close(q);
    conduit_publication_close(p);
}

struct header_inbox {
    int count;
    conduit_header h[8];
};

static void collect_ex(void *user, const conduit_header *h, const uint8_t *data, size_t len) {
    struct header_inbox *in = user;
    (void)data;
    (void)len;
    if (in->count < 8 && h->size >= sizeof(conduit_header)) in->h[in->count++] = *h;
}

/* Two publishers on one shm channel, a third refused; poll_ex names them. */
static void test_publishers_and_poll_ex(void) {
    char u[1024];
    uri(u, sizeof u, "cpublishers", "&capacity=64k&publishers=2");
    conduit_subscription *s = conduit_subscription_open(u);
    conduit_publication *a = conduit_publication_open(u);
    conduit_publication *b = conduit_publication_open(u);
    CHECK(s != NULL && a != NULL && b != NULL);
    if (!s || !a || !b) return;
    CHECK(conduit_publication_open(u) == NULL);
    CHECK(strstr(conduit_last_error(), "publisher slots") != NULL);
    CHECK(strcmp(conduit_status_string(CONDUIT_TOO_MANY_PUBLISHERS),
                 "CONDUIT_TOO_MANY_PUBLISHERS") == 0);
    uint64_t deadline = now_ms() + 10000;
    while (conduit_publication_is_connected(a) != 1 || conduit_publication_is_connected(b) != 1) {
        if (conduit_subscription_poll(s, ignore, NULL, 1) < 0 || now_ms() > deadline) break;
    }
    CHECK(conduit_publication_offer(a, 1, (const uint8_t *)"from a", 6) >= 0);
    CHECK(conduit_publication_offer(b, 2, (const uint8_t *)"from b", 6) >= 0);
    struct header_inbox in = {0};
    deadline = now_ms() + 10000;
    while (in.count < 2 && now_ms() < deadline) {
        if (conduit_subscription_poll_ex(s, collect_ex, &in, 8) < 0) break;
    }
    CHECK(conduit_subscription_poll_ex(s, NULL, NULL, 1) == CONDUIT_INVALID_ARGUMENT);
    CHECK(in.count == 2);
    if (in.count == 2) {
        CHECK(in.h[0].size == sizeof(conduit_header));
        CHECK(in.h[0].type_id == 1 && in.h[1].type_id == 2);
        CHECK(in.h[0].source_kind == CONDUIT_SOURCE_SHM && in.h[1].source_kind == CONDUIT_SOURCE_SHM);
        CHECK(in.h[0].source_index == 0 && in.h[1].source_index == 1);
        CHECK(in.h[0].source_pid == (uint32_t)getpid() && in.h[1].source_pid == (uint32_t)getpid());
        CHECK(in.h[1].position > in.h[0].position);
    }
    conduit_publication_close(b);
    conduit_publication_close(a);
    conduit_subscription_close(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    test_static_strings();
    test_bad_calls_without_channel();
    test_open_failure_status();
    test_last_error_is_per_thread();
    test_claims_and_bad_calls_on_handles();
    test_round_trip();
    test_close_from_handler();
    test_subscriber_count_and_wait();
    test_publishers_and_poll_ex();
    test_receiver_events();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
