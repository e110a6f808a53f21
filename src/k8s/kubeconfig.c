/* The kubeconfig and in-cluster readers (see kubeconfig.h and docs/k8s.md).
 *
 * The kubeconfig is read with libfyaml's document API: unlike the hub's own config
 * (src/core/config.c) we only look a few keys up and ignore everything else, so walking
 * events would buy nothing. Mappings and sequences carry no position in libfyaml 0.7, so
 * an error about one is reported at the line of the key that holds it; scalars have their
 * own. The first error ends the read: a kubeconfig is written by tools, and one precise
 * message is more useful than a cascade. */
#include "k8s/kubeconfig.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/utf8.h"

#include <ctype.h>
#include <errno.h>
#include <libfyaml.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_KUBECONFIG (4 * 1024 * 1024)
#define MAX_TOKEN (64 * 1024)
#define MAX_NAMESPACE 63

/* ---- small file helpers ---- */

/* Reads a whole file of at most `max` bytes. Returns 0 with *data (NUL-terminated, caller
 * frees) and *len, or a negative errno (-EFBIG when larger than `max`). */
static int slurp(const char *path, size_t max, char **data, size_t *len)
{
    struct buf b = BUF_INIT;
    int r = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    for (;;) {
        char chunk[8192];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        buf_append(&b, chunk, n);
        if (b.len > max) {
            r = -EFBIG;
            goto fail;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(f)) {
        r = -EIO;
        goto fail;
    }
    fclose(f);
    *len = b.len;
    *data = buf_steal(&b);
    return 0;
fail:
    fclose(f);
    sodium_memzero(b.data, b.len);
    buf_free(&b);
    return r;
}

int k8s_token_file_read(const char *path, char **token)
{
    char *data = NULL;
    size_t len = 0;
    int r = slurp(path, MAX_TOKEN, &data, &len);
    if (r == -EFBIG)
        return -EINVAL;
    if (r < 0)
        return r;
    size_t start = 0;
    while (start < len && isspace((unsigned char)data[start]))
        start++;
    while (len > start && isspace((unsigned char)data[len - 1]))
        len--;
    r = 0;
    if (len == start) {
        r = -EINVAL;
        goto out;
    }
    for (size_t i = start; i < len; i++) {
        /* It becomes an Authorization header: no CR, LF, NUL or other control byte. */
        if ((unsigned char)data[i] < 0x20 || data[i] == 0x7f) {
            r = -EINVAL;
            goto out;
        }
    }
    *token = xstrndup(data + start, len - start);
out:
    sodium_memzero(data, len);
    free(data);
    return r;
}

void k8s_blob_wipe(struct k8s_blob *b)
{
    if (b->data) {
        sodium_memzero(b->data, b->len);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
}

void k8s_secret_free(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

void k8s_config_free(struct k8s_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->server);
    free(cfg->namespace);
    free(cfg->context);
    free(cfg->ca_file);
    k8s_blob_wipe(&cfg->ca_data);
    k8s_secret_free(cfg->token);
    free(cfg->token_file);
    free(cfg->cert_file);
    k8s_blob_wipe(&cfg->cert_data);
    free(cfg->key_file);
    k8s_blob_wipe(&cfg->key_data);
    free(cfg);
}

/* A namespace is a DNS label: it ends up in URL paths, so it is checked, not trusted. */
static bool namespace_valid(const char *ns, size_t len)
{
    if (len == 0 || len > MAX_NAMESPACE || ns[0] == '-' || ns[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = ns[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return true;
}

/* ---- kubeconfig ---- */

struct kc {
    const char *path;
    char *dir; /* the kubeconfig's directory, for relative file names */
    char *err;
    int rc;
};

static void kc_fail(struct kc *kc, int rc, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Records the first error only; `line` 0 when unknown, `key` NULL when none applies. */
static void kc_fail(struct kc *kc, int rc, int line, const char *key, const char *fmt, ...)
{
    if (kc->err)
        return;
    struct buf b = BUF_INIT;
    buf_appendf(&b, "kubeconfig %s", kc->path);
    if (line > 0)
        buf_appendf(&b, ":%d", line);
    buf_append_str(&b, ": ");
    if (key)
        buf_appendf(&b, "%s: ", key);
    struct buf text = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&text, fmt, ap);
    va_end(ap);
    /* Messages quote values from the file: a control character there (a newline in a
     * quoted namespace) must not split the one-line message or forge a log line. */
    buf_append_escaped(&b, text.data, text.len);
    buf_free(&text);
    kc->err = buf_steal(&b);
    kc->rc = rc;
}

static int node_line(struct fy_node *n, int fallback)
{
    struct fy_token *t = n ? fy_node_get_scalar_token(n) : NULL;
    const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
    return m ? m->line + 1 : fallback;
}

static bool node_is_null(struct fy_node *n)
{
    if (n == NULL)
        return true;
    if (fy_node_get_type(n) != FYNT_SCALAR || fy_node_get_style(n) != FYNS_PLAIN)
        return false;
    size_t len = 0;
    const char *t = fy_node_get_scalar(n, &len);
    return t == NULL || len == 0 || (len == 1 && t[0] == '~') ||
           (len == 4 &&
            (memcmp(t, "null", 4) == 0 || memcmp(t, "Null", 4) == 0 || memcmp(t, "NULL", 4) == 0));
}

/* The value of `key` in mapping `map` (NULL when absent), with the key's line in *line. */
static struct fy_node *map_get(struct fy_node *map, const char *key, int *line)
{
    void *iter = NULL;
    struct fy_node_pair *p;
    size_t klen = strlen(key);
    for (;;) {
        p = fy_node_mapping_iterate(map, &iter);
        if (p == NULL)
            return NULL;
        struct fy_node *k = fy_node_pair_key(p);
        size_t len = 0;
        const char *t =
            k && fy_node_get_type(k) == FYNT_SCALAR ? fy_node_get_scalar(k, &len) : NULL;
        if (t && len == klen && memcmp(t, key, len) == 0) {
            *line = node_line(k, 0);
            return fy_node_pair_value(p);
        }
    }
}

/* Looks up `key` (a string) in `map`. Returns the text (borrowed from the document, not
 * NUL-terminated) and its length, or NULL when absent or null; on a non-string value or a
 * NUL byte records an error and returns NULL. `where` names `map` in messages. */
static const char *get_str(struct kc *kc, struct fy_node *map, const char *where, const char *key,
                           size_t *len, int *line)
{
    int kline = 0;
    struct fy_node *v = map_get(map, key, &kline);
    *len = 0;
    *line = kline;
    if (node_is_null(v))
        return NULL;
    if (fy_node_get_type(v) != FYNT_SCALAR) {
        kc_fail(kc, -EINVAL, kline, NULL, "%s.%s: expected a string", where, key);
        return NULL;
    }
    const char *t = fy_node_get_scalar(v, len);
    *line = node_line(v, kline);
    if (t && memchr(t, '\0', *len)) {
        kc_fail(kc, -EINVAL, *line, NULL, "%s.%s: NUL characters are not allowed", where, key);
        return NULL;
    }
    return t ? t : "";
}

static char *get_strdup(struct kc *kc, struct fy_node *map, const char *where, const char *key,
                        int *line)
{
    size_t len;
    const char *t = get_str(kc, map, where, key, &len, line);
    return t ? xstrndup(t, len) : NULL;
}

/* Records an error for a key codehub refuses to honour, when it is present (and not null,
 * nor an empty string, nor false: tools write those for "not set"). */
static void refuse_key(struct kc *kc, struct fy_node *map, const char *where, const char *key,
                       const char *why)
{
    int line = 0;
    struct fy_node *v = map_get(map, key, &line);
    if (node_is_null(v))
        return;
    if (fy_node_get_type(v) == FYNT_SCALAR) {
        size_t len = 0;
        const char *t = fy_node_get_scalar(v, &len);
        if (len == 0 || (len == 5 && strncasecmp(t, "false", 5) == 0))
            return;
    }
    kc_fail(kc, -ENOTSUP, line, NULL, "%s.%s: %s", where, key, why);
}

/* Finds the entry named `name` in the top-level list `list` ("clusters", "users",
 * "contexts"), whose items are {name: ..., <field>: {...}}. Returns the <field> mapping and
 * its line and sets *where to "list[i].field" (caller frees), or NULL with an error. */
static struct fy_node *find_named(struct kc *kc, struct fy_node *root, const char *list,
                                  const char *field, const char *name, int name_line,
                                  const char *name_key, char **where, int *line)
{
    int lline = 0;
    struct fy_node *seq = map_get(root, list, &lline);
    if (node_is_null(seq)) {
        kc_fail(kc, -EINVAL, name_line, name_key, "%s \"%s\" not found (no %s list)", field, name,
                list);
        return NULL;
    }
    if (fy_node_get_type(seq) != FYNT_SEQUENCE) {
        kc_fail(kc, -EINVAL, lline, list, "expected a list");
        return NULL;
    }
    void *iter = NULL;
    for (int i = 0;; i++) {
        struct fy_node *item = fy_node_sequence_iterate(seq, &iter);
        if (item == NULL)
            break;
        char at[64];
        snprintf(at, sizeof(at), "%s[%d]", list, i);
        if (fy_node_get_type(item) != FYNT_MAPPING) {
            kc_fail(kc, -EINVAL, node_line(item, lline), at, "expected a mapping");
            return NULL;
        }
        size_t nlen;
        int nline;
        const char *n = get_str(kc, item, at, "name", &nlen, &nline);
        if (kc->err)
            return NULL;
        if (n == NULL || nlen != strlen(name) || memcmp(n, name, nlen) != 0)
            continue;
        int fline = 0;
        struct fy_node *v = map_get(item, field, &fline);
        if (node_is_null(v)) {
            kc_fail(kc, -EINVAL, nline, at, "%s \"%s\" has no %s", field, name, field);
            return NULL;
        }
        if (fy_node_get_type(v) != FYNT_MAPPING) {
            kc_fail(kc, -EINVAL, fline, NULL, "%s.%s: expected a mapping", at, field);
            return NULL;
        }
        *where = xasprintf("%s.%s", at, field);
        *line = fline;
        return v;
    }
    kc_fail(kc, -EINVAL, name_line, name_key, "%s \"%s\" not found in %s", field, name, list);
    return NULL;
}

/* A file name from the kubeconfig, made absolute against its directory and checked to be
 * readable. Returns the path (caller frees) or NULL with an error. */
static char *file_ref(struct kc *kc, const char *name, size_t len, int line, const char *where,
                      const char *key)
{
    char *path;
    if (len == 0) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.%s: empty file name", where, key);
        return NULL;
    }
    if (name[0] == '/')
        path = xstrndup(name, len);
    else
        path = xasprintf("%s/%.*s", kc->dir, (int)len, name);
    if (access(path, R_OK) != 0) {
        int e = errno;
        kc_fail(kc, -EINVAL, line, NULL, "%s.%s: cannot read %s: %s", where, key, path,
                strerror(e));
        free(path);
        return NULL;
    }
    return path;
}

/* Decodes a base64 `*-data` value that must hold PEM. Returns 0, or -1 with an error. */
static int decode_pem(struct kc *kc, const char *b64, size_t len, int line, const char *where,
                      const char *key, struct k8s_blob *out)
{
    size_t max = len / 4 * 3 + 3;
    unsigned char *bin = xmalloc(max + 1);
    size_t bin_len = 0;
    const char *end = NULL;
    /* Line breaks are tolerated: a block scalar may wrap the value. */
    if (sodium_base642bin(bin, max, b64, len, " \t\r\n", &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + len) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.%s: not valid base64", where, key);
        goto fail;
    }
    if (bin_len == 0) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.%s: empty", where, key);
        goto fail;
    }
    bin[bin_len] = '\0';
    /* curl would only say "unable to set private key" much later; say what is wrong now. */
    if (memmem(bin, bin_len, "-----BEGIN ", 11) == NULL) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.%s: decoded value is not PEM (no -----BEGIN line)",
                where, key);
        goto fail;
    }
    out->data = bin;
    out->len = bin_len;
    return 0;
fail:
    sodium_memzero(bin, max + 1);
    free(bin);
    return -1;
}

/* Reads "KEY" (a file name) and "KEY-data" (inline PEM) from `map`: at most one of them.
 * Returns 0 (possibly with neither set) or -1 with an error. */
static int load_pem_pair(struct kc *kc, struct fy_node *map, const char *where, const char *key,
                         char **file, struct k8s_blob *data)
{
    char data_key[64];
    snprintf(data_key, sizeof(data_key), "%s-data", key);
    size_t flen, dlen;
    int fline, dline;
    const char *f = get_str(kc, map, where, key, &flen, &fline);
    const char *d = get_str(kc, map, where, data_key, &dlen, &dline);
    if (kc->err)
        return -1;
    if (f && d) {
        kc_fail(kc, -EINVAL, dline, NULL, "%s: both %s and %s are set; use one", where, key,
                data_key);
        return -1;
    }
    if (f) {
        *file = file_ref(kc, f, flen, fline, where, key);
        return *file ? 0 : -1;
    }
    if (d)
        return decode_pem(kc, d, dlen, dline, where, data_key, data);
    return 0;
}

/* Accepts what YAML 1.1 (which kubectl's parser follows) calls a boolean. */
static int get_bool(struct kc *kc, struct fy_node *map, const char *where, const char *key,
                    bool *out)
{
    size_t len;
    int line;
    const char *t = get_str(kc, map, where, key, &len, &line);
    static const char *const yes[] = {"true", "yes", "on", "y"};
    static const char *const no[] = {"false", "no", "off", "n"};
    *out = false;
    if (kc->err)
        return -1;
    if (t == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (len == strlen(yes[i]) && strncasecmp(t, yes[i], len) == 0) {
            *out = true;
            return 0;
        }
        if (len == strlen(no[i]) && strncasecmp(t, no[i], len) == 0)
            return 0;
    }
    kc_fail(kc, -EINVAL, line, NULL, "%s.%s: expected true or false, got \"%.*s\"", where, key,
            (int)len, t);
    return -1;
}

/* Checks and normalises the server URL. Returns the URL (caller frees) or NULL. */
static char *server_url(struct kc *kc, const char *s, size_t len, int line, const char *where)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f) {
            kc_fail(kc, -EINVAL, line, NULL, "%s.server: spaces or control characters in URL",
                    where);
            return NULL;
        }
    }
    if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        kc_fail(kc, -ENOTSUP, line, NULL,
                "%s.server: plain http:// is refused; codehub talks to the API over verified "
                "TLS only",
                where);
        return NULL;
    }
    if (len < 8 || strncasecmp(s, "https://", 8) != 0) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.server: expected an https:// URL, got \"%.*s\"", where,
                (int)len, s);
        return NULL;
    }
    while (len > 8 && s[len - 1] == '/')
        len--;
    if (len == 8 || s[8] == '/') {
        kc_fail(kc, -EINVAL, line, NULL, "%s.server: no host in \"%.*s\"", where, (int)len, s);
        return NULL;
    }
    if (memchr(s, '?', len) || memchr(s, '#', len)) {
        kc_fail(kc, -EINVAL, line, NULL, "%s.server: a query or fragment is not allowed", where);
        return NULL;
    }
    char *url = xstrndup(s, len);
    memcpy(url, "https", 5); /* the scheme in lower case, whatever was written */
    return url;
}

static void load_cluster(struct kc *kc, struct fy_node *cl, const char *where, int line,
                         struct k8s_config *cfg)
{
    bool insecure = false;
    if (get_bool(kc, cl, where, "insecure-skip-tls-verify", &insecure) < 0)
        return;
    if (insecure) {
        int l = 0;
        map_get(cl, "insecure-skip-tls-verify", &l);
        kc_fail(kc, -ENOTSUP, l, NULL,
                "%s.insecure-skip-tls-verify: refused; codehub always verifies the API "
                "server's certificate (give certificate-authority or certificate-authority-data)",
                where);
        return;
    }
    refuse_key(kc, cl, where, "proxy-url", "not supported (connect to the API server directly)");
    refuse_key(kc, cl, where, "tls-server-name",
               "not supported (the certificate must match the server URL's host)");
    if (kc->err)
        return;
    size_t slen;
    int sline;
    const char *s = get_str(kc, cl, where, "server", &slen, &sline);
    if (kc->err)
        return;
    if (s == NULL || slen == 0) {
        kc_fail(kc, -EINVAL, line, NULL, "%s: no server", where);
        return;
    }
    cfg->server = server_url(kc, s, slen, sline, where);
    if (cfg->server == NULL)
        return;
    load_pem_pair(kc, cl, where, "certificate-authority", &cfg->ca_file, &cfg->ca_data);
}

static void load_user(struct kc *kc, struct fy_node *u, const char *where, int line,
                      struct k8s_config *cfg)
{
    refuse_key(kc, u, where, "exec",
               "exec credential plugins are not supported (codehub runs no helper programs); "
               "use a service-account token or a client certificate");
    refuse_key(kc, u, where, "auth-provider",
               "auth-provider plugins are not supported; use a service-account token or a "
               "client certificate");
    refuse_key(kc, u, where, "username", "basic authentication is not supported");
    refuse_key(kc, u, where, "password", "basic authentication is not supported");
    refuse_key(kc, u, where, "as", "impersonation is not supported");
    refuse_key(kc, u, where, "as-uid", "impersonation is not supported");
    refuse_key(kc, u, where, "as-groups", "impersonation is not supported");
    refuse_key(kc, u, where, "as-user-extra", "impersonation is not supported");
    if (kc->err)
        return;

    size_t len;
    int tline;
    const char *tf = get_str(kc, u, where, "tokenFile", &len, &tline);
    if (kc->err)
        return;
    if (tf) {
        cfg->token_file = file_ref(kc, tf, len, tline, where, "tokenFile");
        if (cfg->token_file == NULL)
            return;
        char *tok = NULL;
        int r = k8s_token_file_read(cfg->token_file, &tok);
        if (r < 0) {
            kc_fail(kc, -EINVAL, tline, NULL, "%s.tokenFile: %s: %s", where, cfg->token_file,
                    r == -EINVAL ? "empty, too large or holds control characters" : strerror(-r));
            return;
        }
        k8s_secret_free(tok);
    }
    const char *t = get_str(kc, u, where, "token", &len, &tline);
    if (kc->err)
        return;
    if (t && len > 0) {
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) {
                kc_fail(kc, -EINVAL, tline, NULL, "%s.token: control characters in token", where);
                return;
            }
        }
        cfg->token = xstrndup(t, len);
    }
    if (load_pem_pair(kc, u, where, "client-certificate", &cfg->cert_file, &cfg->cert_data) < 0 ||
        load_pem_pair(kc, u, where, "client-key", &cfg->key_file, &cfg->key_data) < 0)
        return;
    bool has_cert = cfg->cert_file || cfg->cert_data.data;
    bool has_key = cfg->key_file || cfg->key_data.data;
    if (has_cert != has_key)
        kc_fail(kc, -EINVAL, line, NULL, "%s: %s without %s", where,
                has_cert ? "client-certificate" : "client-key",
                has_cert ? "client-key" : "client-certificate");
}

static void load_root(struct kc *kc, struct fy_node *root, const char *context,
                      struct k8s_config *cfg)
{
    if (root == NULL || node_is_null(root)) {
        kc_fail(kc, -EINVAL, 0, NULL, "empty file");
        return;
    }
    if (fy_node_get_type(root) != FYNT_MAPPING) {
        kc_fail(kc, -EINVAL, node_line(root, 0), NULL, "not a kubeconfig (expected a mapping)");
        return;
    }
    int cline = 0;
    const char *ckey = NULL;
    char *ctx_name = NULL;
    char *where = NULL;
    if (context) {
        ctx_name = xstrdup(context);
    } else {
        ckey = "current-context";
        ctx_name = get_strdup(kc, root, "kubeconfig", "current-context", &cline);
        if (kc->err)
            goto out;
        if (ctx_name == NULL || ctx_name[0] == '\0') {
            kc_fail(kc, -EINVAL, cline, NULL, "no context given and no current-context set");
            goto out;
        }
    }
    int line = 0;
    struct fy_node *ctx =
        find_named(kc, root, "contexts", "context", ctx_name, cline, ckey, &where, &line);
    if (ctx == NULL)
        goto out;
    cfg->context = xstrdup(ctx_name);

    int l;
    char *cluster = get_strdup(kc, ctx, where, "cluster", &l);
    char *user = get_strdup(kc, ctx, where, "user", &l);
    size_t nslen;
    int nsline;
    const char *ns = get_str(kc, ctx, where, "namespace", &nslen, &nsline);
    if (kc->err)
        goto out_names;
    if (ns && nslen > 0) {
        if (!namespace_valid(ns, nslen)) {
            kc_fail(kc, -EINVAL, nsline, NULL, "%s.namespace: \"%.*s\" is not a valid namespace",
                    where, (int)nslen, ns);
            goto out_names;
        }
        cfg->namespace = xstrndup(ns, nslen);
    } else {
        cfg->namespace = xstrdup("default");
    }
    if (cluster == NULL || cluster[0] == '\0') {
        kc_fail(kc, -EINVAL, line, NULL, "%s: no cluster", where);
        goto out_names;
    }
    char *cwhere = NULL;
    int cl_line = 0;
    char *cluster_key = xasprintf("%s.cluster", where);
    struct fy_node *cl =
        find_named(kc, root, "clusters", "cluster", cluster, line, cluster_key, &cwhere, &cl_line);
    free(cluster_key);
    if (cl)
        load_cluster(kc, cl, cwhere, cl_line, cfg);
    free(cwhere);
    if (kc->err || user == NULL || user[0] == '\0')
        goto out_names; /* no user: anonymous, as kubectl allows */
    char *uwhere = NULL;
    int u_line = 0;
    char *user_key = xasprintf("%s.user", where);
    struct fy_node *u =
        find_named(kc, root, "users", "user", user, line, user_key, &uwhere, &u_line);
    free(user_key);
    if (u)
        load_user(kc, u, uwhere, u_line, cfg);
    free(uwhere);
out_names:
    free(cluster);
    free(user);
out:
    free(ctx_name);
    free(where);
}

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* Errors are collected and reported by us; nothing goes to stderr. */
}

int k8s_config_load_kubeconfig(const char *path, const char *context, struct k8s_config **out,
                               char **err)
{
    struct kc kc = {.path = path};
    struct k8s_config *cfg = xcalloc(1, sizeof(*cfg));
    struct fy_diag *diag = NULL;
    struct fy_document *doc = NULL;
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    *err = NULL;

    int r = slurp(path, MAX_KUBECONFIG, &data, &len);
    if (r < 0) {
        kc_fail(&kc, r == -EFBIG ? -EINVAL : -ENOENT, 0, NULL, "cannot read: %s",
                r == -EFBIG ? "larger than 4 MiB" : strerror(-r));
        goto fail;
    }
    size_t bad = utf8_invalid_at(data, len);
    if (bad < len) {
        /* Checked before libfyaml sees it: some malformed input makes it loop forever. */
        kc_fail(&kc, -EINVAL, utf8_line_of(data, bad), NULL, "not valid UTF-8 (byte %zu)", bad + 1);
        goto fail;
    }
    const char *slash = strrchr(path, '/');
    kc.dir = slash ? (slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path)))
                   : xstrdup(".");

    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_discard;
    dcfg.level = FYET_ERROR;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag == NULL) {
        kc_fail(&kc, -ENOMEM, 0, NULL, "cannot create the YAML parser");
        goto fail;
    }
    fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_JSON_NONE | FYPCF_RESOLVE_DOCUMENT,
        .diag = diag,
    };
    doc = fy_document_build_from_string(&pcfg, data, len);
    if (doc == NULL) {
        void *iter = NULL;
        struct fy_diag_error *de;
        for (;;) {
            de = fy_diag_errors_iterate(diag, &iter);
            if (de == NULL || de->type >= FYET_ERROR)
                break;
        }
        /* No document and no complaint: the file holds nothing (or only comments). */
        kc_fail(&kc, -EINVAL, de && de->line > 0 ? de->line : 0, NULL, "%s",
                de ? (de->msg ? de->msg : "YAML syntax error") : "empty file");
        goto fail;
    }
    load_root(&kc, fy_document_root(doc), context, cfg);
    if (kc.err)
        goto fail;
    *out = cfg;
    r = 0;
    goto out;
fail:
    k8s_config_free(cfg);
    *err = kc.err;
    kc.err = NULL;
    r = kc.rc;
out:
    if (doc)
        fy_document_destroy(doc);
    if (diag)
        fy_diag_destroy(diag);
    if (data) {
        /* It may hold tokens and keys. */
        sodium_memzero(data, len);
        free(data);
    }
    free(kc.dir);
    free(kc.err);
    return r;
}

/* ---- in-cluster ---- */

int k8s_config_load_incluster(const char *dir, struct k8s_config **out, char **err)
{
    struct k8s_config *cfg = xcalloc(1, sizeof(*cfg));
    int r;
    *out = NULL;
    *err = NULL;
    if (dir == NULL) {
        const char *env = getenv("CODEHUB_K8S_SERVICEACCOUNT_DIR");
        dir = env && env[0] ? env : K8S_SERVICEACCOUNT_DIR;
    }
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || host[0] == '\0' || port == NULL || port[0] == '\0') {
        *err = xstrdup("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are "
                       "not set (not running in a pod?)");
        r = -ENOENT;
        goto fail;
    }
    char *end = NULL;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (errno != 0 || *end != '\0' || p < 1 || p > 65535 || !isdigit((unsigned char)port[0])) {
        *err = xasprintf("in-cluster: KUBERNETES_SERVICE_PORT \"%s\" is not a port", port);
        r = -EINVAL;
        goto fail;
    }
    for (const char *h = host; *h; h++) {
        if (!(isalnum((unsigned char)*h) || *h == '.' || *h == '-' || *h == ':')) {
            *err = xasprintf("in-cluster: KUBERNETES_SERVICE_HOST \"%s\" is not a host", host);
            r = -EINVAL;
            goto fail;
        }
    }
    if (strchr(host, ':'))
        cfg->server = xasprintf("https://[%s]:%ld", host, p);
    else
        cfg->server = xasprintf("https://%s:%ld", host, p);

    cfg->token_file = xasprintf("%s/token", dir);
    char *tok = NULL;
    r = k8s_token_file_read(cfg->token_file, &tok);
    if (r < 0) {
        *err =
            xasprintf("in-cluster: token %s: %s", cfg->token_file,
                      r == -EINVAL ? "empty, too large or holds control characters" : strerror(-r));
        r = r == -EINVAL ? -EINVAL : -ENOENT;
        goto fail;
    }
    k8s_secret_free(tok);
    cfg->ca_file = xasprintf("%s/ca.crt", dir);
    if (access(cfg->ca_file, R_OK) != 0) {
        *err = xasprintf("in-cluster: CA %s: %s", cfg->ca_file, strerror(errno));
        r = -ENOENT;
        goto fail;
    }

    char *ns_path = xasprintf("%s/namespace", dir);
    char *ns = NULL;
    size_t ns_len = 0;
    r = slurp(ns_path, 1024, &ns, &ns_len);
    free(ns_path);
    if (r == -ENOENT) {
        cfg->namespace = xstrdup("default");
    } else if (r < 0) {
        *err = xasprintf("in-cluster: namespace %s/namespace: %s", dir,
                         r == -EFBIG ? "too large" : strerror(-r));
        r = -EINVAL;
        goto fail;
    } else {
        size_t s = 0;
        while (s < ns_len && isspace((unsigned char)ns[s]))
            s++;
        while (ns_len > s && isspace((unsigned char)ns[ns_len - 1]))
            ns_len--;
        if (!namespace_valid(ns + s, ns_len - s)) {
            *err = xasprintf("in-cluster: namespace %s/namespace: \"%.*s\" is not a valid "
                             "namespace",
                             dir, (int)(ns_len - s), ns + s);
            free(ns);
            r = -EINVAL;
            goto fail;
        }
        cfg->namespace = xstrndup(ns + s, ns_len - s);
        free(ns);
    }
    *out = cfg;
    return 0;
fail:
    k8s_config_free(cfg);
    return r;
}
