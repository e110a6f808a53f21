/* A deliberately tiny template language for the embedded pages: `{{name}}` inserts a
 * value HTML-escaped, `{{{name}}}` inserts trusted, pre-rendered HTML. No logic: code
 * decides, templates only lay out. */
#ifndef CODEHUB_WEB_TEMPLATE_H
#define CODEHUB_WEB_TEMPLATE_H

#include "core/buf.h"

/* Appends the rendering of `text` to `out`. `vars` is a NULL-terminated list of
 * name, value pairs; a placeholder without a value renders as nothing. Returns 0, or
 * -EINVAL for an unterminated placeholder (nothing is appended then). */
int web_template_render(struct buf *out, const char *text, const char *const *vars);

/* Renders the embedded template "templates/NAME.html". Returns 0, -ENOENT when there is
 * no such template, or -EINVAL as above. */
int web_template_render_named(struct buf *out, const char *name, const char *const *vars);

#endif
