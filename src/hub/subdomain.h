/* Per-user origins (proxy.user_subdomains): NAME's workspace at SCHEME://NAME.DOMAIN[:PORT]/
 * instead of the hub's /user/NAME/, so that a page one workspace serves can neither read nor
 * set anything on the hub's origin or on another workspace's.
 *
 * The browser signs in on the hub; a workspace origin learns who it is through a handoff:
 *
 *   1. NAME.DOMAIN/path, no workspace cookie: set a random state cookie on NAME.DOMAIN and
 *      redirect to HUB/hub/handoff?workspace=NAME&state=H(state)&next=/path.
 *   2. The hub (signed in, allowed into NAME's workspace) stores a single-use nonce for
 *      30 s and redirects to NAME.DOMAIN/_codehub/handoff?code=CODE&next=/path, CODE
 *      naming the workspace, the hub session, H(state), the nonce and the expiry under a MAC.
 *   3. NAME.DOMAIN checks the MAC, the workspace, the expiry and the state cookie, consumes
 *      the nonce in the store (any replica may), and sets its own workspace cookie: the
 *      workspace, the hub session's hash and an expiry under a MAC. Every request then
 *      resolves that hub session like the hub's own cookie, so logging out, a deleted user
 *      or a revoked session ends the workspace's access at once.
 *
 * The MAC key is derived from the hub secret (auth.secret_file or the store's), so every
 * replica checks what any replica made. Design note: docs/security.md, "Per-user origins". */
#ifndef CODEHUB_HUB_SUBDOMAIN_H
#define CODEHUB_HUB_SUBDOMAIN_H

#include "core/buf.h"
#include "hub/hub.h"

#include <stdbool.h>

/* Length of a hub session's stored hash in hex, as the workspace cookie carries it. */
#define HUB_SUBDOMAIN_HASH_HEX 64

/* Reads proxy.user_subdomains into hub (cookie names, the origin's tail, the MAC key).
 * Call once the public origin is known. Nothing to do when the key is empty. */
void hub_subdomain_setup(struct hub *hub);
/* Frees what hub_subdomain_setup() made. */
void hub_subdomain_cleanup(struct hub *hub);

/* True when per-user origins are on and the request's Host is NAME.DOMAIN (any port):
 * then `name` holds NAME, lowercased, or "" when NAME cannot be a user's (too long, not a
 * DNS label, not a valid user name). Loop-safe. */
bool hub_subdomain_of(const struct hub *hub, const struct http_request *req, char name[40]);

/* Appends SCHEME://NAME.DOMAIN[:PORT] (no trailing slash) to `out`. */
void hub_subdomain_origin(const struct hub *hub, const char *name, struct buf *out);

/* Whether user name `name` can be a host name label (letters, digits, inner '-'). */
bool hub_subdomain_name_ok(const char *name);

/* Finds, among the request's workspace cookies, one made for workspace `name` that has not
 * expired; copies the hub session hash it names into hash (HUB_SUBDOMAIN_HASH_HEX + 1
 * bytes). Every cookie of that name is tried, so one tossed in from another workspace
 * under a broader Domain cannot hide the right one. Returns false when there is none. */
bool hub_subdomain_cookie_session(const struct hub *hub, const struct http_request *req,
                                  const char *name, char hash[HUB_SUBDOMAIN_HASH_HEX + 1]);

/* Step 1 on NAME.DOMAIN: sets the state cookie and redirects the browser to the hub's
 * /hub/handoff. Finishes the exchange. Loop thread. */
void hub_subdomain_begin(struct hub *hub, struct http_exchange *ex, const char *name);

/* Step 2: GET /hub/handoff on the hub. Worker thread (a web handler). */
void hub_subdomain_issue(struct hub_call *call);

/* Step 3: GET /_codehub/handoff on NAME.DOMAIN. Checks the code, consumes its nonce on
 * the thread pool, sets the workspace cookie and redirects to `next`. Finishes the
 * exchange. Loop thread. */
void hub_subdomain_redeem(struct hub *hub, struct http_exchange *ex, const char *name);

/* /user/NAME/REST?Q on the hub's origin when per-user origins are on: GET and HEAD are
 * sent to NAME.DOMAIN/REST?Q, anything else gets 421 naming that origin. Finishes the
 * exchange. Loop thread. */
void hub_subdomain_send_away(struct hub *hub, struct http_exchange *ex, const char *name);

#endif
