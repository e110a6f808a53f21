#include "auth/token.h"

#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define TOKEN_RANDOM_BYTES 32
#define DISPLAY_PREFIX_MAX 10 /* letters/digits before the '_' */
#define DISPLAY_SECRET_CHARS 4

_Static_assert(sodium_base64_ENCODED_LEN(TOKEN_RANDOM_BYTES,
                                         sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   AUTH_TOKEN_RANDOM_CHARS + 1,
               "43 base64url characters encode 32 bytes");
_Static_assert(DISPLAY_PREFIX_MAX + 1 + DISPLAY_SECRET_CHARS < AUTH_TOKEN_DISPLAY_MAX,
               "display prefix fits its buffer");

char *auth_token_new(const char *prefix)
{
    unsigned char raw[TOKEN_RANDOM_BYTES];
    size_t plen;
    char *out;

    if (prefix == NULL)
        prefix = "";
    /* sodium_init() only fails when the system has no usable random source, and then no
     * secret can be made safely at all. */
    if (sodium_init() < 0) {
        log_error("libsodium cannot be initialised: no secure random source, aborting");
        abort();
    }
    plen = strlen(prefix);
    out = xmalloc(plen + AUTH_TOKEN_RANDOM_CHARS + 1);
    memcpy(out, prefix, plen);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out + plen, AUTH_TOKEN_RANDOM_CHARS + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    return out;
}

void auth_token_hash(const char *token, char out[AUTH_TOKEN_HASH_HEX])
{
    unsigned char digest[32];

    if (token == NULL)
        token = "";
    crypto_generichash(digest, sizeof digest, (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(out, AUTH_TOKEN_HASH_HEX, digest, sizeof digest);
}

static bool is_prefix_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

void auth_token_display_prefix(const char *token, char out[AUTH_TOKEN_DISPLAY_MAX])
{
    size_t keep = 0;
    size_t len;

    if (token == NULL)
        token = "";
    /* Find "<letters/digits>_" at the start. A session token without a prefix may happen to
     * start that way too; it is then shown with a few more characters, still far from
     * enough to guess the rest (at least 29 of its 43 random characters stay hidden). */
    while (keep < DISPLAY_PREFIX_MAX && is_prefix_char(token[keep]))
        keep++;
    if (keep > 0 && token[keep] == '_')
        keep++;
    else
        keep = 0;
    keep += DISPLAY_SECRET_CHARS;
    len = strnlen(token, keep);
    memcpy(out, token, len);
    out[len] = '\0';
}

bool auth_secure_equal(const char *a, const char *b)
{
    size_t alen;
    size_t blen;

    if (a == NULL || b == NULL)
        return false;
    alen = strlen(a);
    blen = strlen(b);
    if (alen != blen)
        return false;
    return sodium_memcmp(a, b, alen) == 0;
}
