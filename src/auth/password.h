/* Passwords: the policy a new password must meet, and Argon2id hashing (libsodium).
 *
 * Hashing and verifying take tens of milliseconds and tens of megabytes at the default
 * cost, on purpose: call them from libuv's thread pool, never on the event loop. Every
 * function here is thread-safe. sodium_init() is called by main; these functions also call
 * it themselves (it is idempotent and thread-safe), so tests and tools need not. */
#ifndef CODEHUB_AUTH_PASSWORD_H
#define CODEHUB_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/* Size of the buffer for an encoded hash, NUL included; at least crypto_pwhash_STRBYTES
 * (checked at compile time in password.c). */
#define AUTH_PASSWORD_HASH_MAX 128

/* The longest accepted password, in bytes. Argon2 could take more, but nobody types more
 * and a bound keeps request bodies and hashing time predictable. */
#define AUTH_PASSWORD_MAX_BYTES 1024

/* Checks a new password against the policy: valid UTF-8, at least `min_len` characters
 * (Unicode code points, not bytes, so "été" is 3), at most AUTH_PASSWORD_MAX_BYTES bytes,
 * and no control characters (C0, DEL, C1). A C string cannot hold a NUL, so callers that
 * decode a form must reject an embedded %00 themselves rather than pass a truncated string.
 * Returns 0, or -EINVAL with *why (when `why` is not NULL) set to a static message fit to
 * show the user (never free it). A NULL password is invalid. */
int auth_password_check_policy(const char *password, size_t min_len, const char **why);

/* Hashes `password` with Argon2id (crypto_pwhash_str_alg, ALG_ARGON2ID13) at the current
 * process-wide cost, with a fresh random salt, into `out` as a NUL-terminated
 * "$argon2id$v=19$m=...,t=...,p=1$salt$hash" string (caller-owned buffer).
 * Returns 0, -ENOMEM when the memory for the hash cannot be had, or -EINVAL for a NULL
 * password. Does not apply the policy: check it first where a password is being chosen. */
int auth_password_hash(const char *password, char out[AUTH_PASSWORD_HASH_MAX]);

/* Returns true when `password` matches the encoded `hash` (any cost, any Argon2 variant
 * libsodium knows). False for a NULL or empty hash (an account without a password), a NULL
 * password, a malformed hash, or when memory runs out. Comparison is constant-time. */
bool auth_password_verify(const char *hash, const char *password);

/* Sets the cost used by every later auth_password_hash(), auth_password_needs_rehash() and
 * auth_password_burn(). Values are clamped to libsodium's Argon2id limits
 * (crypto_pwhash_OPSLIMIT_MIN..MAX, crypto_pwhash_MEMLIMIT_MIN..MAX); memlimit is in bytes.
 * The default is crypto_pwhash_OPSLIMIT_INTERACTIVE / crypto_pwhash_MEMLIMIT_INTERACTIVE.
 * Meant for start-up (from the config) and tests; safe to call at any time. */
void auth_password_set_cost(unsigned long long opslimit, size_t memlimit);

/* Stores the current cost in *ops and *mem (either may be NULL). */
void auth_password_cost(unsigned long long *ops, size_t *mem);

/* Returns true when `hash` should be replaced by a fresh auth_password_hash() of the
 * password that was just verified against it: it was made at another cost than the
 * current one, with another algorithm than Argon2id (e.g. Argon2i), or it cannot be
 * parsed. False only for an Argon2id hash at exactly the current cost. */
bool auth_password_needs_rehash(const char *hash);

/* Spends the same time and memory as auth_password_verify() of a real hash at the current
 * cost, and throws the result away: call it for an unknown user name (or a user without a
 * password) so that the response time does not reveal which names exist. The hash it
 * verifies against is computed once, from a random password nobody knows, and recomputed
 * when the cost changes; concurrent first calls wait for one computation. A NULL password
 * is treated as "". */
void auth_password_burn(const char *password);

#endif
