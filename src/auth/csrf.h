/* CSRF tokens tied to a session, and the hub's secret they are derived with.
 *
 * A session's CSRF token is a MAC of the session's stored hash under the hub's secret, so
 * it needs no storage, survives hub restarts, is the same on every hub replica that shares
 * the secret, and dies with the session. It never reveals the session token: it is derived
 * from the token's hash, through a keyed hash. Thread-safe (pure functions, plus libsodium's
 * random generator in auth_secret_generate()). */
#ifndef CODEHUB_AUTH_CSRF_H
#define CODEHUB_AUTH_CSRF_H

#include <stdbool.h>

/* Size of a CSRF token buffer: 43 base64url characters and a NUL. */
#define AUTH_CSRF_LEN 44

/* Size of the hub's secret in bytes, and of its hex form with the NUL. */
#define AUTH_SECRET_BYTES 32
#define AUTH_SECRET_HEX 65

/* Writes to `out` the CSRF token for the session whose stored hash (auth_token_hash() of
 * the cookie) is `session_hash`: base64url without padding of keyed BLAKE2b-256
 * (crypto_generichash, key = the hub's 32-byte secret) over "csrf:" + session_hash.
 * Deterministic. A NULL session_hash is taken as "". */
void auth_csrf_for_session(const unsigned char key[AUTH_SECRET_BYTES], const char *session_hash,
                           char out[AUTH_CSRF_LEN]);

/* Returns true when `presented` (the form's `_xsrf` field or the X-XSRF-Token header) is
 * the CSRF token of `session_hash` under `key`, compared in constant time. False when
 * `presented` is NULL, and when `session_hash` is NULL or empty: requests without a session
 * (the login form) must be given their own random pre-session cookie and pass its hash. */
bool auth_csrf_check(const unsigned char key[AUTH_SECRET_BYTES], const char *session_hash,
                     const char *presented);

/* Decodes the hub's secret from exactly 64 hex digits (either case, no spaces or newline)
 * into `key`. Returns 0, or -EINVAL (and `key` zeroed) for anything else, NULL included. */
int auth_secret_decode(const char *hex, unsigned char key[AUTH_SECRET_BYTES]);

/* Writes a new random secret (32 bytes from randombytes_buf()) to `hex_out` as 64 lowercase
 * hex digits and a NUL. The caller stores it (the store's meta table). */
void auth_secret_generate(char hex_out[AUTH_SECRET_HEX]);

#endif
