#include "hub/identity_cache.h"

#include "core/alloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HASH_LEN 72

struct cache_entry {
    char hash[HASH_LEN]; /* "" = free slot */
    struct hub_identity id;
    int64_t stored_ms;
};

/* Open addressing with linear probing over a power-of-two table at most half full. When
 * it would pass that, the table is emptied: everything in it can be rebuilt from the store
 * and a full table means the TTL is far longer than the traffic needs. */
struct hub_identity_cache {
    pthread_mutex_t lock;
    struct cache_entry *slots;
    size_t nslots;
    size_t used;
    size_t max_entries;
    int64_t ttl_ms;
};

static size_t slot_of(const struct hub_identity_cache *c, const char *hash)
{
    /* The key is already a cryptographic hash in hex: its first 16 digits are uniform. */
    uint64_t h = 0;
    for (int i = 0; i < 16 && hash[i]; i++)
        h = (h << 4) | (uint64_t)(hash[i] <= '9' ? hash[i] - '0' : (hash[i] | 0x20) - 'a' + 10);
    return (size_t)(h & (c->nslots - 1));
}

struct hub_identity_cache *hub_identity_cache_new(size_t max_entries, int64_t ttl_ms)
{
    struct hub_identity_cache *c = xcalloc(1, sizeof *c);
    size_t n = 16;
    while (n < max_entries * 2)
        n *= 2;
    c->slots = xcalloc(n, sizeof *c->slots);
    c->nslots = n;
    c->max_entries = max_entries;
    c->ttl_ms = ttl_ms;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void hub_identity_cache_free(struct hub_identity_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c);
}

static struct cache_entry *find(struct hub_identity_cache *c, const char *hash)
{
    for (size_t i = slot_of(c, hash), n = 0; n < c->nslots; i = (i + 1) & (c->nslots - 1), n++) {
        struct cache_entry *e = &c->slots[i];
        if (e->hash[0] == '\0')
            return NULL;
        if (strcmp(e->hash, hash) == 0)
            return e;
    }
    return NULL;
}

bool hub_identity_cache_get(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                            struct hub_identity *out)
{
    bool hit = false;
    if (hash == NULL || hash[0] == '\0')
        return false;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, hash);
    if (e != NULL && now_ms - e->stored_ms < c->ttl_ms) {
        *out = e->id;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void hub_identity_cache_put(struct hub_identity_cache *c, const char *hash,
                            const struct hub_identity *id, int64_t now_ms)
{
    if (hash == NULL || hash[0] == '\0' || strlen(hash) >= HASH_LEN || id->via == HUB_AUTH_NONE)
        return;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, hash);
    if (e == NULL) {
        if (c->used >= c->max_entries) {
            memset(c->slots, 0, c->nslots * sizeof *c->slots);
            c->used = 0;
        }
        size_t i = slot_of(c, hash);
        while (c->slots[i].hash[0] != '\0')
            i = (i + 1) & (c->nslots - 1);
        e = &c->slots[i];
        memcpy(e->hash, hash, strlen(hash) + 1);
        c->used++;
    }
    e->id = *id;
    e->stored_ms = now_ms;
    pthread_mutex_unlock(&c->lock);
}

/* Empties slot i and moves later members of its probe run back so that no look-up stops
 * early at the hole (deletion for linear probing, without tombstones). */
static void remove_at(struct hub_identity_cache *c, size_t i)
{
    size_t mask = c->nslots - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (c->slots[j].hash[0] == '\0')
            break;
        size_t k = slot_of(c, c->slots[j].hash);
        /* Slot j may stay where it is when its home k lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    memset(&c->slots[i], 0, sizeof c->slots[i]);
    c->used--;
}

bool hub_identity_cache_get_stale(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                                  int64_t max_age_ms, struct hub_identity *out)
{
    bool hit = false;
    if (hash == NULL || hash[0] == '\0')
        return false;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, hash);
    if (e != NULL && now_ms - e->stored_ms < max_age_ms) {
        *out = e->id;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

/* Removes every entry for which `match` is true. */
static void forget_matching(struct hub_identity_cache *c,
                            bool (*match)(const struct cache_entry *e, const void *arg),
                            const void *arg)
{
    pthread_mutex_lock(&c->lock);
    size_t i = 0;
    while (i < c->nslots) {
        struct cache_entry *e = &c->slots[i];
        /* remove_at may move another matching entry into slot i: look again. */
        if (e->hash[0] != '\0' && match(e, arg))
            remove_at(c, i);
        else
            i++;
    }
    pthread_mutex_unlock(&c->lock);
}

static bool match_name(const struct cache_entry *e, const void *arg)
{
    return strcmp(e->id.name, arg) == 0;
}

static bool match_user_id(const struct cache_entry *e, const void *arg)
{
    return e->id.user_id == *(const int64_t *)arg;
}

static bool match_hash(const struct cache_entry *e, const void *arg)
{
    return strcmp(e->hash, arg) == 0;
}

static bool match_any(const struct cache_entry *e, const void *arg)
{
    return true;
}

void hub_identity_cache_forget_user(struct hub_identity_cache *c, const char *name)
{
    forget_matching(c, match_name, name);
}

void hub_identity_cache_forget_user_id(struct hub_identity_cache *c, int64_t user_id)
{
    forget_matching(c, match_user_id, &user_id);
}

void hub_identity_cache_forget_credential(struct hub_identity_cache *c, const char *hash)
{
    if (hash == NULL || hash[0] == '\0')
        return;
    /* The key is the hash the store keeps for the session or token, which is what a
     * deletion elsewhere names. */
    forget_matching(c, match_hash, hash);
}

void hub_identity_cache_clear(struct hub_identity_cache *c)
{
    forget_matching(c, match_any, NULL);
}

size_t hub_identity_cache_size(struct hub_identity_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->used;
    pthread_mutex_unlock(&c->lock);
    return n;
}
