/* Random secrets handed to clients (session cookies, API tokens) and the form in which the
 * store keeps them. A token is shown once; the store holds only its BLAKE2b hash, so a
 * leaked database does not hand out working sessions or tokens. A token carries 256 random
 * bits, which is why a fast unsalted hash is enough here (unlike passwords): nobody can
 * enumerate the input space. All functions are pure or use libsodium's thread-safe random
 * generator, so they are thread-safe. */
#ifndef CODEHUB_AUTH_TOKEN_H
#define CODEHUB_AUTH_TOKEN_H

#include <stdbool.h>

/* Size of a token hash in hex: 64 lowercase hex digits and a NUL. */
#define AUTH_TOKEN_HASH_HEX 65

/* Number of characters after the prefix: 32 random bytes in base64url without padding. */
#define AUTH_TOKEN_RANDOM_CHARS 43

/* Prefixes in use. API tokens carry a recognisable prefix so that secret scanners and
 * people can tell what a leaked string is; session cookies need none. */
#define AUTH_TOKEN_PREFIX_SESSION ""
#define AUTH_TOKEN_PREFIX_API "chb_"

/* Size of the buffer auth_token_display_prefix() fills. */
#define AUTH_TOKEN_DISPLAY_MAX 16

/* Returns a new token: `prefix` (NULL means "") followed by 43 base64url characters
 * ([A-Za-z0-9_-], no padding) encoding 32 bytes from randombytes_buf().
 * Caller frees with free(). Never returns NULL (out of memory aborts). */
char *auth_token_new(const char *prefix);

/* Writes to `out` the lowercase hex of BLAKE2b-256 (crypto_generichash, no key) of the
 * token's bytes, prefix included: the value the store keeps and looks tokens up by.
 * A NULL token is hashed as "". */
void auth_token_hash(const char *token, char out[AUTH_TOKEN_HASH_HEX]);

/* Writes to `out` the start of `token` shown in token lists, enough to tell tokens apart
 * and never enough to use one: the prefix (a run of up to 10 lowercase letters or digits
 * ending in '_', e.g. "chb_") plus 4 characters, e.g. "chb_Ab12"; for a token without such
 * a prefix, its first 4 characters. Shorter tokens are copied whole. NULL gives "". */
void auth_token_display_prefix(const char *token, char out[AUTH_TOKEN_DISPLAY_MAX]);

/* Returns true when the strings `a` and `b` are equal, comparing the bytes in constant time
 * (sodium_memcmp) so that the time taken does not reveal how much of a secret matched.
 * Strings of different lengths are unequal; only the fact that the lengths differ can be
 * timed, never the content. False when either is NULL. Two empty strings are equal:
 * callers must refuse an empty secret before comparing. */
bool auth_secure_equal(const char *a, const char *b);

#endif
