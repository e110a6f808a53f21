/* A short-lived, bounded cache from a credential's hash (session cookie or API token) to
 * the identity it stands for, so that proxying a workspace request costs a hash and a
 * table look-up instead of a store query. Entries are fresh for `ttl_ms` (changes made
 * elsewhere — another process, the CLI — are seen within that time) and are kept, for
 * hub_identity_cache_get_stale() only, until `keep_ms`; changes made by this process
 * (logout, password change, user deletion, admin flag) evict at once. The table grows and
 * shrinks with the entries it holds, so its memory follows the credentials in use within
 * `keep_ms`, not `max_entries`. Thread-safe. */
#ifndef CODEHUB_HUB_IDENTITY_CACHE_H
#define CODEHUB_HUB_IDENTITY_CACHE_H

#include "hub/hub.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns a new cache of at most `max_entries` entries, fresh for `ttl_ms` and kept until
 * `keep_ms` (at least `ttl_ms`); free with hub_identity_cache_free(). */
struct hub_identity_cache *hub_identity_cache_new(size_t max_entries, int64_t ttl_ms,
                                                  int64_t keep_ms);
void hub_identity_cache_free(struct hub_identity_cache *c);

/* Copies the cached identity for `hash` into *out and returns true, or returns false when
 * there is none or it is older than the TTL. */
bool hub_identity_cache_get(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                            struct hub_identity *out);
/* Remembers an authenticated identity (via != HUB_AUTH_NONE) for `hash`. */
void hub_identity_cache_put(struct hub_identity_cache *c, const char *hash,
                            const struct hub_identity *id, int64_t now_ms);
/* As hub_identity_cache_get, but accepts an entry up to `keep_ms` old: used only while the
 * store cannot be reached, so that known users keep reaching their running servers. */
bool hub_identity_cache_get_stale(struct hub_identity_cache *c, const char *hash, int64_t now_ms,
                                  struct hub_identity *out);
/* Drops the entries older than `keep_ms` and resizes the table to what is left: run
 * periodically, so that the memory of a burst of logins is given back once it is over. */
void hub_identity_cache_sweep(struct hub_identity_cache *c, int64_t now_ms);
/* Forgets every entry of user `name`. */
void hub_identity_cache_forget_user(struct hub_identity_cache *c, const char *name);
/* Forgets every entry of the user with store id `user_id` (another replica or the CLI
 * changed or deleted the account). */
void hub_identity_cache_forget_user_id(struct hub_identity_cache *c, int64_t user_id);
/* Forgets the entry of one credential: `hash` is the stored hash of a session or token
 * deleted elsewhere. */
void hub_identity_cache_forget_credential(struct hub_identity_cache *c, const char *hash);
/* Forgets everything (after a gap in the notifications). */
void hub_identity_cache_clear(struct hub_identity_cache *c);
/* Returns the number of entries held. */
size_t hub_identity_cache_size(struct hub_identity_cache *c);
/* Returns the number of slots the table has now (what its memory is proportional to). */
size_t hub_identity_cache_slots(struct hub_identity_cache *c);

#endif
