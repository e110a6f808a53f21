/* The REST API under /hub/api, modelled on JupyterHub's (docs/api.md describes every
 * endpoint): version and info, whoami, users, and each user's API tokens.
 *
 * Routing is a table of path patterns with one handler per method; a path no pattern
 * matches is 404, a method the pattern has no handler for is 405 with an Allow header.
 * Every endpoint but GET /hub/api needs credentials (401 without), and every
 * state-changing method must pass the hub's CSRF check first (403). Bodies are
 * application/json (415 otherwise), parsed strictly (400 with line and column). */
#ifndef CODEHUB_API_API_H
#define CODEHUB_API_API_H

#include "hub/hub.h"

/* Answers one request whose normalised path (call->path) is /hub/api or lies under it,
 * filling call->ex->res through the hub's response helpers; it always answers, errors
 * included (JSON {"status", "message"}). Runs on a worker thread (hub_call_queue), after
 * hub_identify() has filled call->id; calls the store synchronously. Owns nothing of
 * `call`, which the hub frees after finishing the exchange. */
void api_handle(struct hub_call *call);

#endif
