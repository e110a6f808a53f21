/* User names: the one rule every entry point (login form, API, `codehub user add`, the
 * store) applies before a name is used, so that a name can go into paths (`/user/NAME/`),
 * Kubernetes object names and file names without any further escaping. */
#ifndef CODEHUB_AUTH_USERNAME_H
#define CODEHUB_AUTH_USERNAME_H

/* The longest valid name, in bytes (every valid name is ASCII). */
#define AUTH_USERNAME_MAX 32

/* Checks `name` against [a-z0-9][a-z0-9._-]{0,31}.
 * Returns 0 when it matches. Otherwise returns -EINVAL and, when `why` is not NULL, sets
 * *why to a static message fit to show the user (never free it): "must be lowercase" when
 * the name would be valid once lowercased, else the general rule. A NULL `name` is
 * invalid. Pure function, thread-safe. */
int auth_username_check(const char *name, const char **why);

#endif
