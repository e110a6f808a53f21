#include "auth/throttle.h"

#include "core/alloc.h"
#include "core/log.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define DIGEST_BYTES 16 /* crypto_generichash_BYTES_MIN: 128 bits, collisions out of reach */
#define INITIAL_BUCKETS 64
#define MAX_BUCKETS ((size_t)1 << 24)
#define BASE_DELAY_MS 1000LL
/* 1 s × 2^40 is 35 years: any cap anyone configures is reached long before. */
#define MAX_SHIFT 40

_Static_assert(DIGEST_BYTES >= crypto_generichash_BYTES_MIN, "digest length allowed");

struct throttle_entry {
    struct throttle_entry *chain; /* next in the same bucket */
    struct throttle_entry *older; /* age list, by time of last failure */
    struct throttle_entry *newer;
    unsigned char digest[DIGEST_BYTES];
    unsigned failures;
    int64_t last_fail_ms;
    int64_t next_allowed_ms;
};

struct auth_throttle {
    pthread_mutex_t lock;
    unsigned char hash_key[crypto_generichash_KEYBYTES];
    struct throttle_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t max_buckets;
    size_t count;
    size_t max_entries;
    struct throttle_entry *oldest;
    struct throttle_entry *newest;
    unsigned free_attempts;
    int64_t max_delay_ms;
    int64_t decay_ms;
};

struct auth_throttle *auth_throttle_new(unsigned free_attempts, int64_t max_delay_ms,
                                        size_t max_entries)
{
    struct auth_throttle *t;

    if (max_delay_ms < 0 || max_entries == 0)
        return NULL;
    if (sodium_init() < 0) {
        log_error("libsodium cannot be initialised: no secure random source, aborting");
        abort();
    }
    t = xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    randombytes_buf(t->hash_key, sizeof t->hash_key);
    t->max_buckets = INITIAL_BUCKETS;
    /* One bucket per entry at most: chains stay short without a table sized for the worst
     * case up front. */
    while (t->max_buckets < max_entries && t->max_buckets < MAX_BUCKETS)
        t->max_buckets *= 2;
    t->nbuckets = INITIAL_BUCKETS;
    t->buckets = xcalloc(t->nbuckets, sizeof *t->buckets);
    t->max_entries = max_entries;
    t->free_attempts = free_attempts;
    t->max_delay_ms = max_delay_ms;
    t->decay_ms =
        max_delay_ms > AUTH_THROTTLE_MIN_DECAY_MS ? max_delay_ms : AUTH_THROTTLE_MIN_DECAY_MS;
    return t;
}

void auth_throttle_free(struct auth_throttle *t)
{
    struct throttle_entry *e;
    struct throttle_entry *next;

    if (t == NULL)
        return;
    for (e = t->oldest; e != NULL; e = next) {
        next = e->newer;
        free(e);
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    sodium_memzero(t->hash_key, sizeof t->hash_key);
    free(t);
}

/* Computed before taking the lock: the hash is the costliest step and needs no shared
 * state beyond the key, which never changes after auth_throttle_new(). */
static void key_digest(const struct auth_throttle *t, const char *key,
                       unsigned char out[DIGEST_BYTES])
{
    crypto_generichash(out, DIGEST_BYTES, (const unsigned char *)key, strlen(key), t->hash_key,
                       sizeof t->hash_key);
}

static size_t bucket_of(const unsigned char digest[DIGEST_BYTES], size_t nbuckets)
{
    uint64_t h;
    memcpy(&h, digest, sizeof h);
    return (size_t)(h & (nbuckets - 1));
}

static struct throttle_entry *entry_find(struct auth_throttle *t,
                                         const unsigned char digest[DIGEST_BYTES])
{
    struct throttle_entry *e = t->buckets[bucket_of(digest, t->nbuckets)];
    while (e != NULL && memcmp(e->digest, digest, DIGEST_BYTES) != 0)
        e = e->chain;
    return e;
}

static void age_unlink(struct auth_throttle *t, struct throttle_entry *e)
{
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    e->older = NULL;
    e->newer = NULL;
}

static void age_append(struct auth_throttle *t, struct throttle_entry *e)
{
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest != NULL)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
}

static void entry_remove(struct auth_throttle *t, struct throttle_entry *e)
{
    struct throttle_entry **link = &t->buckets[bucket_of(e->digest, t->nbuckets)];
    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    age_unlink(t, e);
    t->count--;
    free(e);
}

static bool entry_expired(const struct auth_throttle *t, const struct throttle_entry *e,
                          int64_t now_ms)
{
    return now_ms - e->last_fail_ms > t->decay_ms;
}

/* The age list is ordered by last failure, so expired entries sit at its old end; each
 * call sweeps them, which keeps the table small without a timer. With a clock that went
 * backwards an expired entry may hide behind a younger one; lookups check expiry too. */
static void sweep_expired(struct auth_throttle *t, int64_t now_ms)
{
    while (t->oldest != NULL && entry_expired(t, t->oldest, now_ms))
        entry_remove(t, t->oldest);
}

static void table_grow(struct auth_throttle *t)
{
    size_t n = t->nbuckets * 2;
    struct throttle_entry **b = xcalloc(n, sizeof *b);

    for (size_t i = 0; i < t->nbuckets; i++) {
        struct throttle_entry *e = t->buckets[i];
        while (e != NULL) {
            struct throttle_entry *next = e->chain;
            size_t j = bucket_of(e->digest, n);
            e->chain = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

static struct throttle_entry *entry_add(struct auth_throttle *t,
                                        const unsigned char digest[DIGEST_BYTES], int64_t now_ms)
{
    struct throttle_entry *e;
    size_t i;

    /* Expired entries were swept by the caller, so what remains at the old end is the
     * least recently failed key. */
    while (t->count >= t->max_entries)
        entry_remove(t, t->oldest);
    if (t->count >= t->nbuckets && t->nbuckets < t->max_buckets)
        table_grow(t);
    e = xcalloc(1, sizeof *e);
    memcpy(e->digest, digest, DIGEST_BYTES);
    e->next_allowed_ms = now_ms;
    i = bucket_of(digest, t->nbuckets);
    e->chain = t->buckets[i];
    t->buckets[i] = e;
    age_append(t, e);
    t->count++;
    return e;
}

static int64_t delay_for(const struct auth_throttle *t, unsigned failures)
{
    unsigned shift;
    int64_t delay;

    if (failures < t->free_attempts)
        return 0;
    shift = failures - t->free_attempts;
    delay = shift >= MAX_SHIFT ? t->max_delay_ms : BASE_DELAY_MS << shift;
    return delay < t->max_delay_ms ? delay : t->max_delay_ms;
}

int64_t auth_throttle_check(struct auth_throttle *t, const char *key, int64_t now_ms)
{
    unsigned char digest[DIGEST_BYTES];
    struct throttle_entry *e;
    int64_t wait = 0;

    if (t == NULL || key == NULL)
        return 0;
    key_digest(t, key, digest);
    pthread_mutex_lock(&t->lock);
    sweep_expired(t, now_ms);
    e = entry_find(t, digest);
    if (e != NULL && entry_expired(t, e, now_ms))
        entry_remove(t, e);
    else if (e != NULL && now_ms < e->next_allowed_ms)
        wait = e->next_allowed_ms - now_ms;
    pthread_mutex_unlock(&t->lock);
    return wait;
}

void auth_throttle_fail(struct auth_throttle *t, const char *key, int64_t now_ms)
{
    unsigned char digest[DIGEST_BYTES];
    struct throttle_entry *e;

    if (t == NULL || key == NULL)
        return;
    key_digest(t, key, digest);
    pthread_mutex_lock(&t->lock);
    sweep_expired(t, now_ms);
    e = entry_find(t, digest);
    if (e != NULL && entry_expired(t, e, now_ms)) {
        entry_remove(t, e);
        e = NULL;
    }
    if (e == NULL) {
        e = entry_add(t, digest, now_ms);
    } else {
        age_unlink(t, e);
        age_append(t, e);
    }
    if (e->failures < UINT_MAX)
        e->failures++;
    e->last_fail_ms = now_ms;
    if (e->failures >= t->free_attempts)
        e->next_allowed_ms = now_ms + delay_for(t, e->failures);
    pthread_mutex_unlock(&t->lock);
}

void auth_throttle_succeed(struct auth_throttle *t, const char *key)
{
    unsigned char digest[DIGEST_BYTES];
    struct throttle_entry *e;

    if (t == NULL || key == NULL)
        return;
    key_digest(t, key, digest);
    pthread_mutex_lock(&t->lock);
    e = entry_find(t, digest);
    if (e != NULL)
        entry_remove(t, e);
    pthread_mutex_unlock(&t->lock);
}

size_t auth_throttle_size(struct auth_throttle *t)
{
    size_t n;

    if (t == NULL)
        return 0;
    pthread_mutex_lock(&t->lock);
    n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
