/* The hub's HTML pages: login, logout, home, admin, tokens, password, errors.
 * Rendered on the server from the embedded templates; the interactive parts (admin
 * table, tokens) are small scripts using the REST API. Login and password change work
 * without JavaScript. */
#ifndef CODEHUB_WEB_PAGES_H
#define CODEHUB_WEB_PAGES_H

#include "hub/hub.h"

/* Handles every page under /hub (and, for now, /user) on a worker thread. */
void web_handle(struct hub_call *call);

/* Sets ex->res to a complete HTML error page. Touches only ex->res; callable on the
 * loop thread or a worker. */
void web_respond_error_page(struct http_exchange *ex, int status, const char *message);

/* True when `next` is a safe local redirect target: a path on this origin ("/x"), not
 * "//host" or "/\host", no control characters, at most 2 KiB. */
bool web_next_is_safe(const char *next);

#endif
