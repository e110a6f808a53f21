/* libFuzzer driver: what a per-user origin reads from the browser (src/hub/subdomain.c):
 * the Host that names the workspace, and the workspace cookies among everything else a
 * Cookie header may carry. Input: a Host line, a newline, then the Cookie header.
 *
 * Invariants:
 *   - a Host is taken for NAME.DOMAIN only when it is exactly that (any case, any port),
 *     and NAME is then a valid user name that is also a DNS label, or "";
 *   - no input alone is ever a workspace cookie (none carries our MAC);
 *   - whatever the input holds, a genuine cookie appended after it (another pair, as a
 *     browser sends cookies tossed in from a parent domain before the origin's own) is
 *     found, and yields exactly the session it was made for. */
#include "fuzz_check.h"
#include "hub/subdomain.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char session[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* A cookie as src/hub/subdomain.c writes it (docs/security.md, "Per-user origins"). */
static void genuine_cookie(const struct hub *hub, char *out, size_t cap)
{
    char body[160];
    snprintf(body, sizeof body, "ann.%" PRId64 ".%s", hub_now_ms() + 3600 * 1000, session);
    static const char ctx[] = "codehub workspace cookie v1";
    unsigned char d[32];
    char mac[65];
    crypto_generichash_state st;
    crypto_generichash_init(&st, hub->ws_key, sizeof hub->ws_key, sizeof d);
    crypto_generichash_update(&st, (const unsigned char *)ctx, sizeof ctx);
    crypto_generichash_update(&st, (const unsigned char *)body, strlen(body));
    crypto_generichash_final(&st, d, sizeof d);
    sodium_bin2hex(mac, sizeof mac, d, sizeof d);
    snprintf(out, cap, "%s.%s", body, mac);
}

/* Fills *req with two headers, Host and Cookie, kept in h[0..1] (the strings are borrowed). */
static void request_with(struct http_request *req, struct http_header *h, const char *host,
                         const char *cookie)
{
    memset(req, 0, sizeof *req);
    h[0] = (struct http_header){"Host", 4, host, strlen(host)};
    h[1] = (struct http_header){"Cookie", 6, cookie, strlen(cookie)};
    req->headers = h;
    req->nheaders = 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hub hub;
    static bool ready;
    if (!ready) {
        check(sodium_init() >= 0);
        hub.ws_domain = "ws.example.com";
        hub.ws_cookie = "codehub-ws";
        randombytes_buf(hub.ws_key, sizeof hub.ws_key);
        ready = true;
    }
    /* C strings, as the HTTP parser hands them on: up to the first NUL. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *nl = strchr(text, '\n');
    const char *host = text;
    const char *cookie = "";
    if (nl != NULL) {
        *nl = '\0';
        cookie = nl + 1;
    }

    struct http_request req;
    struct http_header h[2];
    request_with(&req, h, host, cookie);
    char name[40];
    if (hub_subdomain_of(&hub, &req, name)) {
        size_t hlen = strcspn(host, ":");
        const char *dot = memchr(host, '.', hlen);
        check(dot != NULL &&
              strncasecmp(dot + 1, hub.ws_domain, hlen - (size_t)(dot + 1 - host)) == 0);
        check(hlen - (size_t)(dot + 1 - host) == strlen(hub.ws_domain));
        if (name[0] != '\0') {
            check(hub_subdomain_name_ok(name));
            check(strlen(name) == (size_t)(dot - host) &&
                  strncasecmp(name, host, strlen(name)) == 0);
        }
    } else {
        check(name[0] == '\0');
    }

    char hash[HUB_SUBDOMAIN_HASH_HEX + 1];
    check(!hub_subdomain_cookie_session(&hub, &req, "ann", hash));

    char good[256];
    genuine_cookie(&hub, good, sizeof good);
    size_t cap = strlen(cookie) + sizeof good + 32;
    char *both = malloc(cap);
    snprintf(both, cap, "%s; codehub-ws=%s", cookie, good);
    request_with(&req, h, host, both);
    check(hub_subdomain_cookie_session(&hub, &req, "ann", hash));
    check(strcmp(hash, session) == 0);
    check(!hub_subdomain_cookie_session(&hub, &req, "bob", hash));

    free(both);
    free(text);
    return 0;
}
