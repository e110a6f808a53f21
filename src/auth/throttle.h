/* Login throttling with growing delays.
 *
 * Each key (the hub uses "user:NAME" and "addr:IP" separately, so that both one account
 * attacked from many places and one place attacking many accounts slow down) counts its
 * failed logins. The first `free_attempts` attempts are never delayed; from then on each
 * failure makes the next attempt wait twice as long as the one before:
 *
 *   failures so far   < free    = free   free+1   free+2   ...   capped at
 *   wait before next    0        1 s      2 s      4 s     ...   max_delay_ms
 *
 * i.e. after a failure, with n failures counted, the wait is 1 s × 2^(n - free_attempts)
 * when n >= free_attempts. Failures decay: a key whose last failure is older than
 * max(max_delay_ms, 15 min) is forgotten. A success forgets the key at once.
 *
 * Memory is bounded: at most `max_entries` keys are held, in a hash table keyed by a keyed
 * BLAKE2b digest of the key (random per table, so attackers cannot aim for hash collisions;
 * entries have a fixed size whatever the key's length). When full, expired entries go
 * first, then the least recently failed: an attacker spraying names can only push out old
 * entries, never grow memory.
 *
 * Times are caller-supplied milliseconds from one monotonic clock (uv_now() or
 * uv_hrtime()/1e6), which keeps the logic testable. Every function is thread-safe (one mutex
 * per table, held for a hash table operation only). */
#ifndef CODEHUB_AUTH_THROTTLE_H
#define CODEHUB_AUTH_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

/* Failures older than this are forgotten even when max_delay_ms is shorter. */
#define AUTH_THROTTLE_MIN_DECAY_MS (15 * 60 * 1000LL)

struct auth_throttle;

/* Returns a new empty table, or NULL when max_delay_ms < 0 or max_entries == 0.
 * Free with auth_throttle_free(). */
struct auth_throttle *auth_throttle_new(unsigned free_attempts, int64_t max_delay_ms,
                                        size_t max_entries);

/* Frees the table and every entry; NULL is a no-op. No other thread may still use it. */
void auth_throttle_free(struct auth_throttle *t);

/* Returns 0 when an attempt for `key` may proceed at `now_ms`, else the number of
 * milliseconds to wait. Does not count the attempt: report the outcome with
 * auth_throttle_fail() or auth_throttle_succeed(). A NULL table or key returns 0. */
int64_t auth_throttle_check(struct auth_throttle *t, const char *key, int64_t now_ms);

/* Records a failed attempt for `key` at `now_ms` (see the table above). May evict another
 * key when the table is full. A NULL table or key is ignored. */
void auth_throttle_fail(struct auth_throttle *t, const char *key, int64_t now_ms);

/* Forgets `key` after a successful login. A NULL table or key, or an unknown key, is
 * ignored. */
void auth_throttle_succeed(struct auth_throttle *t, const char *key);

/* Returns the number of keys held (expired ones included until they are next swept). */
size_t auth_throttle_size(struct auth_throttle *t);

#endif
