/* Web assets compiled into the binary (cmake/embed.cmake generates the table from the
 * files under src/web/assets/). */
#ifndef CODEHUB_WEB_ASSETS_H
#define CODEHUB_WEB_ASSETS_H

#include <stddef.h>

struct web_asset {
    const char *path; /* relative to src/web/assets, e.g. "static/codehub.css" */
    const char *content_type;
    const unsigned char *data; /* NUL-terminated after `len` bytes */
    size_t len;
};

/* The table, ended by an entry whose path is NULL. */
extern const struct web_asset web_assets[];

/* Returns the asset at `path` or NULL. Borrowed, static. */
const struct web_asset *web_asset_find(const char *path);

#endif
