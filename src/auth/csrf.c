#include "auth/csrf.h"

#include "auth/token.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define CSRF_DIGEST_BYTES 32

_Static_assert(sodium_base64_ENCODED_LEN(CSRF_DIGEST_BYTES,
                                         sodium_base64_VARIANT_URLSAFE_NO_PADDING) == AUTH_CSRF_LEN,
               "AUTH_CSRF_LEN holds base64url of a 32-byte digest");
_Static_assert(AUTH_SECRET_BYTES == crypto_generichash_KEYBYTES, "the secret is a BLAKE2b key");

/* The domain separator: should the secret ever key another derivation, a value made for one
 * purpose can never be replayed as the other. */
static const char csrf_context[] = "csrf:";

void auth_csrf_for_session(const unsigned char key[AUTH_SECRET_BYTES], const char *session_hash,
                           char out[AUTH_CSRF_LEN])
{
    crypto_generichash_state st;
    unsigned char digest[CSRF_DIGEST_BYTES];

    if (session_hash == NULL)
        session_hash = "";
    crypto_generichash_init(&st, key, AUTH_SECRET_BYTES, sizeof digest);
    crypto_generichash_update(&st, (const unsigned char *)csrf_context, sizeof csrf_context - 1);
    crypto_generichash_update(&st, (const unsigned char *)session_hash, strlen(session_hash));
    crypto_generichash_final(&st, digest, sizeof digest);
    sodium_bin2base64(out, AUTH_CSRF_LEN, digest, sizeof digest,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(&st, sizeof st);
}

bool auth_csrf_check(const unsigned char key[AUTH_SECRET_BYTES], const char *session_hash,
                     const char *presented)
{
    char expected[AUTH_CSRF_LEN];
    bool ok;

    if (session_hash == NULL || session_hash[0] == '\0' || presented == NULL)
        return false;
    auth_csrf_for_session(key, session_hash, expected);
    ok = auth_secure_equal(expected, presented);
    sodium_memzero(expected, sizeof expected);
    return ok;
}

int auth_secret_decode(const char *hex, unsigned char key[AUTH_SECRET_BYTES])
{
    size_t bin_len = 0;
    const char *end = NULL;

    if (hex == NULL || strnlen(hex, AUTH_SECRET_HEX) != AUTH_SECRET_HEX - 1)
        goto fail;
    if (sodium_hex2bin(key, AUTH_SECRET_BYTES, hex, AUTH_SECRET_HEX - 1, NULL, &bin_len, &end) != 0)
        goto fail;
    /* hex2bin stops quietly at the first non-hex character: insist that it used all 64. */
    if (bin_len != AUTH_SECRET_BYTES || end != hex + AUTH_SECRET_HEX - 1)
        goto fail;
    return 0;

fail:
    sodium_memzero(key, AUTH_SECRET_BYTES);
    return -EINVAL;
}

void auth_secret_generate(char hex_out[AUTH_SECRET_HEX])
{
    unsigned char raw[AUTH_SECRET_BYTES];

    if (sodium_init() < 0) {
        log_error("libsodium cannot be initialised: no secure random source, aborting");
        abort();
    }
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex_out, AUTH_SECRET_HEX, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}
