/* JSON models of the REST API: the shapes of users, tokens and paginated lists as
 * JupyterHub's API sends them (same field names where the concept is the same), and the
 * strict reading of request bodies.
 *
 * Every function is pure (no store, no I/O) and thread-safe, so handlers on the thread
 * pool can call them and unit tests can check them without a hub. Every json_t returned
 * is a new reference the caller owns (json_decref, or hand it to a function that steals
 * it); none returns NULL, since jansson only fails on out-of-memory here and that aborts. */
#ifndef CODEHUB_API_MODEL_H
#define CODEHUB_API_MODEL_H

#include "store/store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Sets obj[key] = value (stolen) / appends value (stolen) to arr; abort on out-of-memory
 * (a NULL value, which is what a failed jansson constructor returns, counts as that). */
void api_json_set(json_t *obj, const char *key, json_t *value);
void api_json_append(json_t *arr, json_t *value);

/* Returns an ISO 8601 UTC string for `ms` (Unix milliseconds), or JSON null when `ms` is
 * 0 or negative ("never"). */
json_t *api_model_time(int64_t ms);

/* Returns a JSON string of `s` (NULL is ""). Text that is not valid UTF-8 (a note given
 * on the command line, say) is sent with each byte outside printable ASCII replaced by
 * '?', rather than dropped: jansson refuses invalid UTF-8. */
json_t *api_model_text(const char *s);

/* Returns the user model:
 *   {"kind": "user", "name", "admin", "roles": ["admin"] | ["user"], "groups": [],
 *    "created", "last_activity", "server", "pending", "servers": {}}
 * `server` (may be NULL: no row) fills "server" ("/user/NAME/" while running) and
 * "pending" ("spawn" while starting, "stop" while stopping); both are null otherwise. */
json_t *api_model_user(const struct store_user *user, const struct store_server *server);

/* Returns the token model:
 *   {"kind": "api_token", "id": "<id>", "user", "prefix", "note", "scopes": ["user"] |
 *    ["admin"], "created", "expires_at", "last_activity"}
 * `user_name` is the owner's name (the token's joined user_name is used when NULL). The
 * secret is never part of it: the store does not have it. */
json_t *api_model_token(const struct store_token *token, const char *user_name);

/* Wraps `items` (stolen) in JupyterHub's pagination envelope:
 *   {"items": [...], "_pagination": {"offset", "limit", "total",
 *                                     "next": {"offset", "limit", "url"} | null}}
 * where next.url is "`path`?offset=N&limit=L" and next is null on the last page
 * (offset + limit >= total). */
json_t *api_model_page(json_t *items, uint64_t offset, uint64_t limit, uint64_t total,
                       const char *path);

/* Parses a request body as one JSON object, rejecting duplicate keys, NUL characters and
 * anything after the value. Returns the object (caller decrefs), or NULL with `err` set to
 * a message for the client: "invalid JSON at line L column C: WHAT" or "the request body
 * must be a JSON object". `err` is always NUL-terminated and holds printable ASCII only. */
json_t *api_body_parse(const char *data, size_t len, char *err, size_t err_size);

/* Copies `in` (NULL is "") into `out` for quoting in an error message: at most
 * `size` - 1 bytes, each byte outside printable ASCII replaced by '?', and "..." at the
 * end when it had to be cut. `size` must be at least 4. */
void api_text_sanitize(const char *in, char *out, size_t size);

/* Returns the number of characters (Unicode code points) in `s`, which must be valid
 * UTF-8 (as every jansson string is). */
size_t api_text_chars(const char *s);

#endif
