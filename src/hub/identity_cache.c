#include "hub/identity_cache.h"

#include "core/alloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HASH_LEN 72
/* The smallest table: 16 slots of about 230 bytes. */
#define MIN_SLOTS 16

struct cache_entry {
    char hash[HASH_LEN]; /* "" = free slot */
    struct hub_identity id;
    int64_t stored_ms;
};

/* Open addressing with linear probing over a power-of-two table at most half full. The
 * table is sized for what it holds: a put that would fill it past half first drops the
 * entries older than keep_ms and then rebuilds it a quarter full; removals that leave it
 * under an eighth full shrink it the same way. So its memory follows the credentials used
 * within keep_ms (a fixed table sized for max_entries would fill page by page, one random
 * page per new session, until all of its megabytes were resident). Past max_entries, the
 * entries no longer fresh go, and then everything: all of it can be rebuilt from the
 * store, and a full table means the TTL is far longer than the traffic needs. */
struct hub_identity_cache {
    pthread_mutex_t lock;
    struct cache_entry *slots;
    size_t nslots;
    size_t used;
    size_t max_entries;
    size_t max_slots;
    int64_t ttl_ms;
    int64_t keep_ms;
};

static size_t home_of(const char *hash, size_t nslots)
{
    /* The key is already a cryptographic hash in hex: its first 16 digits are uniform. */
    uint64_t h = 0;
    for (int i = 0; i < 16 && hash[i]; i++)
        h = (h << 4) | (uint64_t)(hash[i] <= '9' ? hash[i] - '0' : (hash[i] | 0x20) - 'a' + 10);
    return (size_t)(h & (nslots - 1));
}

static size_t slot_of(const struct hub_identity_cache *c, const char *hash)
{
    return home_of(hash, c->nslots);
}

/* Returns the free slot where `hash` goes in `slots` (a table with room left). */
static struct cache_entry *free_slot(struct cache_entry *slots, size_t nslots, const char *hash)
{
    size_t i = home_of(hash, nslots);
    while (slots[i].hash[0] != '\0')
        i = (i + 1) & (nslots - 1);
    return &slots[i];
}

/* Returns whether entry `e` is to be kept at `now_ms` by a rebuild keeping what is younger
 * than `max_age_ms` (everything when max_age_ms < 0). */
static bool kept(const struct cache_entry *e, int64_t now_ms, int64_t max_age_ms)
{
    return e->hash[0] != '\0' && (max_age_ms < 0 || now_ms - e->stored_ms < max_age_ms);
}

/* Moves the entries kept() into a new table a quarter full with `extra` more (at least
 * MIN_SLOTS, at most max_slots) and frees the old one. */
static void rebuild(struct hub_identity_cache *c, int64_t now_ms, int64_t max_age_ms, size_t extra)
{
    size_t keep = 0;
    for (size_t i = 0; i < c->nslots; i++)
        keep += kept(&c->slots[i], now_ms, max_age_ms);
    size_t n = MIN_SLOTS;
    while (n < (keep + extra) * 4 && n < c->max_slots)
        n *= 2;
    struct cache_entry *slots = xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < c->nslots; i++)
        if (kept(&c->slots[i], now_ms, max_age_ms))
            *free_slot(slots, n, c->slots[i].hash) = c->slots[i];
    free(c->slots);
    c->slots = slots;
    c->nslots = n;
    c->used = keep;
}

/* Shrinks the table after removals when it is under an eighth full. */
static void shrink_if_sparse(struct hub_identity_cache *c)
{
    if (c->nslots > MIN_SLOTS && c->used * 8 < c->nslots)
        rebuild(c, 0, -1, 0);
}

struct hub_identity_cache *hub_identity_cache_new(size_t max_entries, int64_t ttl_ms,
                                                  int64_t keep_ms)
{
    struct hub_identity_cache *c = xcalloc(1, sizeof *c);
    c->max_entries = max_entries > 0 ? max_entries : 1;
    c->max_slots = MIN_SLOTS;
    while (c->max_slots < c->max_entries * 2)
        c->max_slots *= 2;
    c->slots = xcalloc(MIN_SLOTS, sizeof *c->slots);
    c->nslots = MIN_SLOTS;
    c->ttl_ms = ttl_ms;
    c->keep_ms = keep_ms > ttl_ms ? keep_ms : ttl_ms;
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

/* Copies the entry for `hash` younger than `max_age_ms` into *out. Returns whether there
 * was one. */
static bool get_younger(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
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

bool hub_identity_cache_get(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                            struct hub_identity *out)
{
    return get_younger(c, hash, now_ms, c->ttl_ms, out);
}

bool hub_identity_cache_get_stale(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                                  struct hub_identity *out)
{
    return get_younger(c, hash, now_ms, c->keep_ms, out);
}

void hub_identity_cache_put(struct hub_identity_cache *c, const char *hash,
                            const struct hub_identity *id, int64_t now_ms)
{
    if (hash == NULL || hash[0] == '\0' || strlen(hash) >= HASH_LEN || id->via == HUB_AUTH_NONE)
        return;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, hash);
    if (e == NULL) {
        if ((c->used + 1) * 2 > c->nslots || c->used + 1 > c->max_entries) {
            rebuild(c, now_ms, c->keep_ms, 1);
            if (c->used + 1 > c->max_entries)
                rebuild(c, now_ms, c->ttl_ms, 1);
            if (c->used + 1 > c->max_entries)
                rebuild(c, now_ms, 0, 1);
        }
        e = free_slot(c->slots, c->nslots, hash);
        memcpy(e->hash, hash, strlen(hash) + 1);
        c->used++;
    }
    e->id = *id;
    e->stored_ms = now_ms;
    pthread_mutex_unlock(&c->lock);
}

void hub_identity_cache_sweep(struct hub_identity_cache *c, int64_t now_ms)
{
    pthread_mutex_lock(&c->lock);
    bool any_old = false;
    for (size_t i = 0; i < c->nslots && !any_old; i++)
        any_old = c->slots[i].hash[0] != '\0' && !kept(&c->slots[i], now_ms, c->keep_ms);
    if (any_old)
        rebuild(c, now_ms, c->keep_ms, 0);
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
    shrink_if_sparse(c);
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

size_t hub_identity_cache_slots(struct hub_identity_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->nslots;
    pthread_mutex_unlock(&c->lock);
    return n;
}
