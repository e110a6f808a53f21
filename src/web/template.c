#include "web/template.h"

#include "web/assets.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char *lookup(const char *const *vars, const char *name, size_t len)
{
    for (size_t i = 0; vars != NULL && vars[i] != NULL; i += 2)
        if (strlen(vars[i]) == len && memcmp(vars[i], name, len) == 0)
            return vars[i + 1];
    return NULL;
}

int web_template_render(struct buf *out, const char *text, const char *const *vars)
{
    struct buf tmp = BUF_INIT;
    const char *p = text;
    int rc = 0;
    for (;;) {
        const char *open = strstr(p, "{{");
        if (open == NULL) {
            buf_append_str(&tmp, p);
            break;
        }
        buf_append(&tmp, p, (size_t)(open - p));
        bool raw = open[2] == '{';
        const char *name = open + (raw ? 3 : 2);
        const char *close = strstr(name, raw ? "}}}" : "}}");
        if (close == NULL) {
            rc = -EINVAL;
            goto done;
        }
        size_t len = (size_t)(close - name);
        while (len > 0 && *name == ' ') {
            name++;
            len--;
        }
        while (len > 0 && name[len - 1] == ' ')
            len--;
        const char *value = lookup(vars, name, len);
        if (value != NULL) {
            if (raw)
                buf_append_str(&tmp, value);
            else
                buf_append_html(&tmp, value);
        }
        p = close + (raw ? 3 : 2);
    }
    buf_append(out, tmp.data ? tmp.data : "", tmp.len);
done:
    buf_free(&tmp);
    return rc;
}

int web_template_render_named(struct buf *out, const char *name, const char *const *vars)
{
    char path[128];
    snprintf(path, sizeof path, "templates/%s.html", name);
    const struct web_asset *a = web_asset_find(path);
    if (a == NULL)
        return -ENOENT;
    return web_template_render(out, (const char *)a->data, vars);
}
