/* The Kubernetes API client (see client.h and docs/k8s.md).
 *
 * curl's multi-socket interface, driven by libuv:
 *  - CURLMOPT_TIMERFUNCTION arms one uv_timer_t; when it fires we tell curl.
 *  - CURLMOPT_SOCKETFUNCTION asks us to watch a socket: one uv_poll_t per socket.
 *  - Sockets are opened and closed by us (CURLOPT_OPENSOCKETFUNCTION and
 *    CURLOPT_CLOSESOCKETFUNCTION), so that a poll handle is always stopped before its fd is
 *    closed. Otherwise curl closes an fd, the kernel hands the same number to the next
 *    socket, and libuv finds a watcher already registered for it (EEXIST, or an assertion).
 *    A socket curl opens without asking (a resolver's socketpair) gets a poll handle too;
 *    should its number come back from socket() before curl said "remove", the stale handle
 *    is retired first.
 *
 * Re-entrancy: curl refuses to add or remove easy handles from inside its own callbacks
 * (the write callback that feeds a watch is one), and a user callback may cancel requests
 * or close the client at any point. So while the client is "busy" (inside a curl call or
 * while handing out results) cancellations and new requests are only marked, and
 * client_leave() applies them once the outermost level returns. Closing works the same
 * way: the multi handle is cleaned up only when nothing is on the stack.
 *
 * HTTP/1.1 is forced. With HTTP/2 every watch would share one connection, and a watch torn
 * down for silence would be restarted on the very connection that went silent; with one
 * connection per stream, cancelling the stream closes the dead connection too. */
#include "k8s/client.h"

#include "core/alloc.h"
#include "core/log.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLIENT_MAGIC 0x4b38434cu
#define REQUEST_MAGIC 0x4b385251u
#define SOCK_MAGIC 0x4b38534bu

#define DEFAULT_REQUEST_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TOKEN_CHECK_MS 60000
#define DEFAULT_MAX_BODY (64 * 1024 * 1024)
/* A non-2xx answer to a stream is a Status object: a few hundred bytes. */
#define MAX_ERROR_BODY (1024 * 1024)

struct ksock {
    uint32_t magic;
    struct k8s_client *c;
    uv_poll_t poll;
    curl_socket_t fd;
    bool owned; /* opened by on_open_socket: on_close_socket will retire it */
    struct ksock *next;
};

struct k8s_request {
    uint32_t magic;
    struct k8s_client *c;
    CURL *easy;
    struct curl_slist *headers;
    char *method;
    char *url;
    char *content_type; /* of the body; NULL without one */
    char *body;
    size_t body_len;
    struct buf resp;
    bool stream;
    bool in_multi;      /* added to c->multi */
    bool cancelled;     /* abandoned: remove and free without calling back */
    bool finishing;     /* its final callback has started */
    bool retried;       /* already sent again after a 401 */
    bool too_large;     /* the body passed the cap */
    bool consumer_stop; /* on_data asked to stop */
    k8s_data_cb on_data;
    k8s_response_cb done;
    void *data;
    char errbuf[CURL_ERROR_SIZE];
    struct k8s_request *prev, *next;
};

struct k8s_client {
    uint32_t magic;
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct k8s_client_options opt;
    char *user_agent;
    char *server;
    char *namespace;
    bool allow_http;
    char *ca_file;
    struct k8s_blob ca_data;
    char *cert_file;
    struct k8s_blob cert_data;
    char *key_file;
    struct k8s_blob key_data;
    char *token; /* current bearer token, or NULL */
    char *token_file;
    struct stat token_st;
    uint64_t token_checked_ms;

    struct k8s_request *reqs; /* every request not yet finished */
    struct ksock *socks;
    unsigned busy;
    int handles_open; /* the timer and every poll handle not yet closed */
    int watches;
    bool closing;
    bool multi_done;
    void (*close_done)(void *);
    void *close_data;
    struct k8s_client_stats stats;
};

static void client_leave(struct k8s_client *c);
static void timer_closed(uv_handle_t *h);

/* ---- helpers ---- */

static void blob_copy(struct k8s_blob *dst, const struct k8s_blob *src)
{
    dst->data = NULL;
    dst->len = 0;
    if (src->data) {
        dst->data = xmalloc(src->len);
        memcpy(dst->data, src->data, src->len);
        dst->len = src->len;
    }
}

void k8s_query_append(struct buf *b, const char *key, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    bool has_query = b->data && memchr(b->data, '?', b->len);
    buf_append_char(b, has_query ? '&' : '?');
    buf_append_str(b, key);
    buf_append_char(b, '=');
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf_append_char(b, (char)*p);
        } else {
            buf_append_char(b, '%');
            buf_append_char(b, hex[*p >> 4]);
            buf_append_char(b, hex[*p & 15]);
        }
    }
}

/* ---- the bearer token ---- */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Re-reads the token file when it is time to look (every opt.token_check_ms) and it
 * changed, or at once when `force` (after a 401). Kubelet replaces projected tokens through
 * a symlink swap, so a new token shows as a new inode; the content is compared anyway.
 * Returns true when the token changed. A read failure keeps the old token: an API server
 * that rejects it will say so. */
static bool token_refresh(struct k8s_client *c, bool force)
{
    if (c->token_file == NULL)
        return false;
    uint64_t now = uv_now(c->loop);
    if (!force && now - c->token_checked_ms < c->opt.token_check_ms)
        return false;
    c->token_checked_ms = now;
    struct stat st;
    if (stat(c->token_file, &st) != 0) {
        log_event(LOG_WARN, "k8s.token.unreadable", "file", c->token_file, "error", strerror(errno),
                  NULL);
        return false;
    }
    if (!force && same_file(&st, &c->token_st))
        return false;
    char *tok = NULL;
    int r = k8s_token_file_read(c->token_file, &tok);
    if (r < 0) {
        log_event(LOG_WARN, "k8s.token.unreadable", "file", c->token_file, "error",
                  r == -EINVAL ? "empty or malformed" : strerror(-r), NULL);
        return false;
    }
    c->token_st = st;
    if (c->token && strcmp(tok, c->token) == 0) {
        k8s_secret_free(tok);
        return false;
    }
    k8s_secret_free(c->token);
    c->token = tok;
    c->stats.token_reloads++;
    log_event(LOG_INFO, "k8s.token.reloaded", "file", c->token_file, NULL);
    return true;
}

/* ---- sockets ---- */

static struct ksock *sock_find(struct k8s_client *c, curl_socket_t fd)
{
    for (struct ksock *s = c->socks; s; s = s->next) {
        if (s->fd == fd)
            return s;
    }
    return NULL;
}

static void client_destroy(struct k8s_client *c);

static void handle_closed(struct k8s_client *c)
{
    c->handles_open--;
    if (c->multi_done && c->handles_open == 0)
        client_destroy(c);
}

static void sock_closed(uv_handle_t *h)
{
    struct ksock *s = h->data;
    assert(s->magic == SOCK_MAGIC);
    struct k8s_client *c = s->c;
    s->magic = 0;
    free(s);
    handle_closed(c);
}

/* Stops watching `s` (synchronously: libuv drops the fd from epoll at once) and frees it
 * once libuv has closed the handle. The fd itself is not closed here. */
static void sock_retire(struct ksock *s)
{
    struct k8s_client *c = s->c;
    for (struct ksock **pp = &c->socks; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static struct ksock *sock_add(struct k8s_client *c, curl_socket_t fd, bool owned)
{
    struct ksock *s = xcalloc(1, sizeof(*s));
    s->magic = SOCK_MAGIC;
    s->c = c;
    s->fd = fd;
    s->owned = owned;
    int r = uv_poll_init_socket(c->loop, &s->poll, fd);
    if (r < 0) {
        log_event(LOG_ERROR, "k8s.poll.failed", "error", uv_strerror(r), NULL);
        free(s);
        return NULL;
    }
    s->poll.data = s;
    s->next = c->socks;
    c->socks = s;
    c->handles_open++;
    return s;
}

static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct k8s_client *c = clientp;
    assert(c->magic == CLIENT_MAGIC);
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    /* A handle still registered under this number belongs to an fd curl closed behind our
     * back (see the top of the file): it is dead, retire it before reusing the number. */
    struct ksock *stale = sock_find(c, fd);
    if (stale)
        sock_retire(stale);
    if (sock_add(c, fd, true) == NULL) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    c->stats.sockets_opened++;
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct k8s_client *c = clientp;
    assert(c->magic == CLIENT_MAGIC);
    struct ksock *s = sock_find(c, fd);
    if (s)
        sock_retire(s); /* before close(): the poll handle never outlives its fd */
    return close(fd);
}

static void check_multi_info(struct k8s_client *c);

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct ksock *s = h->data;
    assert(s->magic == SOCK_MAGIC);
    struct k8s_client *c = s->c;
    int flags = 0;
    int running = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    c->busy++;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_multi_info(c);
    client_leave(c);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct k8s_client *c = userp;
    assert(c->magic == CLIENT_MAGIC);
    struct ksock *s = sock_find(c, fd);
    if (what == CURL_POLL_REMOVE) {
        if (s && s->owned)
            uv_poll_stop(&s->poll); /* the fd stays open: curl may keep it alive */
        else if (s)
            sock_retire(s); /* curl closes it itself, maybe already has */
        return 0;
    }
    if (s == NULL) {
        s = sock_add(c, fd, false);
        if (s == NULL)
            return 0; /* the transfer will time out rather than take the multi down */
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

/* ---- the timer ---- */

static void on_timeout(uv_timer_t *t)
{
    struct k8s_client *c = t->data;
    int running = 0;
    c->busy++;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
    client_leave(c);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct k8s_client *c = userp;
    assert(c->magic == CLIENT_MAGIC);
    /* Never call curl from here: it is inside curl. A 0 ms timer runs on the next turn. */
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- requests ---- */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct k8s_request *r = userdata;
    assert(r->magic == REQUEST_MAGIC);
    size_t n = size * nmemb;
    if (r->cancelled)
        return 0; /* makes curl end the transfer; it is then removed quietly */
    if (r->stream) {
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && code < 300) {
            if (r->on_data(r->data, ptr, n) < 0) {
                r->consumer_stop = true;
                return 0;
            }
            return r->cancelled ? 0 : n;
        }
    }
    size_t cap = r->stream ? MAX_ERROR_BODY : r->c->opt.max_body;
    if (r->resp.len + n > cap) {
        r->too_large = true;
        return 0;
    }
    buf_append(&r->resp, ptr, n);
    return n;
}

static void req_set_headers(struct k8s_request *r)
{
    struct k8s_client *c = r->c;
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Accept: application/json");
    /* curl would wait for a "100 Continue" before a large body; the API server does not
     * need the pause. */
    h = curl_slist_append(h, "Expect:");
    if (r->content_type) {
        char *ct = xasprintf("Content-Type: %s", r->content_type);
        h = curl_slist_append(h, ct);
        free(ct);
    }
    if (c->token) {
        char *auth = xasprintf("Authorization: Bearer %s", c->token);
        h = curl_slist_append(h, auth);
        k8s_secret_free(auth);
    }
    if (h == NULL) {
        log_error("k8s: out of memory building request headers");
        abort();
    }
    if (r->headers) {
        /* curl copies nothing: the old list is in use until replaced. */
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, h);
        for (struct curl_slist *p = r->headers; p; p = p->next)
            sodium_memzero(p->data, strlen(p->data));
        curl_slist_free_all(r->headers);
    } else {
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, h);
    }
    r->headers = h;
}

static int set_blob(CURL *e, CURLoption opt, const struct k8s_blob *b)
{
    struct curl_blob blob = {.data = b->data, .len = b->len, .flags = CURL_BLOB_COPY};
    return curl_easy_setopt(e, opt, &blob) == CURLE_OK ? 0 : -1;
}

/* Sets every option of `r->easy`. Returns 0, or -1 when curl refuses one (e.g. it was
 * built without blob support). */
static int req_setup(struct k8s_request *r)
{
    struct k8s_client *c = r->c;
    CURL *e = r->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, r->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https") !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
    bad |=
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->opt.connect_timeout_ms) != CURLE_OK;
    if (!r->stream) {
        bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->opt.request_timeout_ms) != CURLE_OK;
        /* Lists of many objects compress well; curl decodes. */
        bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip") != CURLE_OK;
    }
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent) != CURLE_OK;
    /* A watch may sit quiet for minutes; keep-alive probes find a dead peer for the kernel,
     * the watch's silence timeout finds the rest. */
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (c->ca_file || c->ca_data.data) {
        /* Trust the cluster's CA only, not also every public CA in the system's path. */
        bad |= curl_easy_setopt(e, CURLOPT_CAPATH, NULL) != CURLE_OK;
        if (c->ca_file)
            bad |= curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file) != CURLE_OK;
        else
            bad |= set_blob(e, CURLOPT_CAINFO_BLOB, &c->ca_data) < 0;
    }
    if (c->cert_file || c->cert_data.data) {
        bad |= curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK;
        if (c->cert_file)
            bad |= curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file) != CURLE_OK;
        else
            bad |= set_blob(e, CURLOPT_SSLCERT_BLOB, &c->cert_data) < 0;
        if (c->key_file)
            bad |= curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file) != CURLE_OK;
        else
            bad |= set_blob(e, CURLOPT_SSLKEY_BLOB, &c->key_data) < 0;
    }
    if (strcmp(r->method, "GET") != 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK;
    if (r->body) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len) != CURLE_OK;
    }
    req_set_headers(r);
    return bad ? -1 : 0;
}

static void req_link(struct k8s_request *r)
{
    struct k8s_client *c = r->c;
    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->stats.active++;
}

static void req_unlink(struct k8s_request *r)
{
    struct k8s_client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    c->stats.active--;
}

static void req_free(struct k8s_request *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    if (r->headers) {
        for (struct curl_slist *p = r->headers; p; p = p->next)
            sodium_memzero(p->data, strlen(p->data));
        curl_slist_free_all(r->headers);
    }
    free(r->method);
    free(r->url);
    free(r->content_type);
    free(r->body);
    buf_free(&r->resp);
    r->magic = 0;
    free(r);
}

static void multi_add(struct k8s_request *r)
{
    CURLMcode m = curl_multi_add_handle(r->c->multi, r->easy);
    if (m != CURLM_OK) {
        /* Only out of memory or a bug gets here; like xmalloc, give up loudly. */
        log_error("k8s: curl_multi_add_handle: %s", curl_multi_strerror(m));
        abort();
    }
    r->in_multi = true;
}

static bool method_valid(const char *m)
{
    if (m == NULL || m[0] == '\0' || strlen(m) > 16)
        return false;
    for (const char *p = m; *p; p++) {
        if (*p < 'A' || *p > 'Z')
            return false;
    }
    return true;
}

static bool path_valid(const char *p)
{
    if (p == NULL || p[0] != '/')
        return false;
    for (const unsigned char *q = (const unsigned char *)p; *q; q++) {
        if (*q <= 0x20 || *q >= 0x7f || *q == '#')
            return false;
    }
    return true;
}

static struct k8s_request *req_start(struct k8s_client *c, const char *method, const char *path,
                                     const char *content_type, char *body, size_t body_len,
                                     k8s_data_cb on_data, k8s_response_cb done, void *data)
{
    assert(c->magic == CLIENT_MAGIC);
    if (c->closing || !method_valid(method) || !path_valid(path) || done == NULL) {
        free(body);
        return NULL;
    }
    struct k8s_request *r = xcalloc(1, sizeof(*r));
    r->magic = REQUEST_MAGIC;
    r->c = c;
    r->method = xstrdup(method);
    r->url = xasprintf("%s%s", c->server, path);
    r->content_type = content_type ? xstrdup(content_type) : NULL;
    r->body = body;
    r->body_len = body_len;
    r->stream = on_data != NULL;
    r->on_data = on_data;
    r->done = done;
    r->data = data;
    r->easy = curl_easy_init();
    token_refresh(c, false);
    if (r->easy == NULL || req_setup(r) < 0) {
        log_error("k8s: cannot set up a curl handle");
        req_free(r);
        return NULL;
    }
    req_link(r);
    c->stats.requests++;
    if (c->busy == 0)
        multi_add(r);
    /* else client_leave adds it: curl is on the stack and would refuse */
    return r;
}

struct k8s_request *k8s_client_request(struct k8s_client *c, const char *method, const char *path,
                                       json_t *body, k8s_response_cb cb, void *data)
{
    char *text = NULL;
    size_t len = 0;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL)
            return NULL;
        len = strlen(text);
    }
    return req_start(c, method, path, body ? "application/json" : NULL, text, len, NULL, cb, data);
}

struct k8s_request *k8s_client_request_raw(struct k8s_client *c, const char *method,
                                           const char *path, const char *content_type,
                                           const void *body, size_t len, k8s_response_cb cb,
                                           void *data)
{
    char *copy = NULL;
    if (body) {
        copy = xmalloc(len + 1);
        memcpy(copy, body, len);
        copy[len] = '\0';
    }
    return req_start(c, method, path, body ? content_type : NULL, copy, len, NULL, cb, data);
}

struct k8s_request *k8s_client_stream(struct k8s_client *c, const char *path, k8s_data_cb on_data,
                                      k8s_response_cb done, void *data)
{
    if (on_data == NULL)
        return NULL;
    return req_start(c, "GET", path, NULL, NULL, 0, on_data, done, data);
}

void k8s_request_cancel(struct k8s_request *r)
{
    if (r == NULL)
        return;
    assert(r->magic == REQUEST_MAGIC);
    if (r->finishing || r->cancelled)
        return;
    struct k8s_client *c = r->c;
    r->cancelled = true;
    if (c->busy > 0)
        return; /* client_leave removes it */
    c->busy++;
    client_leave(c);
}

/* Whether `result` means the request never got an answer from the server: it was down,
 * restarting or out of reach. Users see "unreachable" rather than curl's socket detail (a
 * request written into a connection the restarting server had just closed fails with
 * "Send failure: Broken pipe"). */
static bool transport_failure(CURLcode result)
{
    switch (result) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
        return true;
    default:
        return false;
    }
}

/* Hands a finished request's result to its callback, or sends it again after a 401 when
 * the token file held a new token. */
static void req_finish(struct k8s_request *r, CURLcode result)
{
    struct k8s_client *c = r->c;
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    int status = (int)code;

    if (result == CURLE_OK && status == 401 && !r->retried && !c->closing &&
        token_refresh(c, true)) {
        r->retried = true;
        c->stats.retries_401++;
        c->stats.requests++;
        buf_reset(&r->resp);
        req_set_headers(r);
        return; /* not in the multi any more: client_leave adds it again */
    }

    char *msg = NULL;
    json_t *body = NULL;
    const char *error = NULL;
    if (result != CURLE_OK) {
        if (r->too_large)
            error = msg = xasprintf("response body larger than %zu bytes",
                                    r->stream ? (size_t)MAX_ERROR_BODY : c->opt.max_body);
        else if (r->consumer_stop)
            error = "stream stopped by the consumer";
        else if (transport_failure(result))
            error = msg = xasprintf("the API server is unreachable (%s)",
                                    r->errbuf[0] ? r->errbuf : curl_easy_strerror(result));
        else
            error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(result);
        if (r->too_large || !r->stream)
            status = 0;
    }
    if (result == CURLE_OK && r->resp.len > 0) {
        json_error_t jerr;
        body = json_loadb(r->resp.data, r->resp.len, JSON_REJECT_DUPLICATES, &jerr);
        if (body == NULL && status >= 200 && status < 300)
            error = msg = xasprintf("invalid JSON in response: %s (line %d)", jerr.text, jerr.line);
    }
    if (error == NULL && (status < 200 || status >= 300)) {
        json_t *m = json_is_object(body) ? json_object_get(body, "message") : NULL;
        if (json_is_string(m))
            error = msg = xasprintf("HTTP %d: %s", status, json_string_value(m));
        else
            error = msg = xasprintf("HTTP %d", status);
    }
    if (error)
        c->stats.failures++;
    r->finishing = true;
    req_unlink(r);
    r->done(r->data, status, body, error);
    json_decref(body);
    free(msg);
    req_free(r);
}

/* Collects finished transfers. Runs with c->busy raised. */
static void check_multi_info(struct k8s_client *c)
{
    for (;;) {
        int left = 0;
        CURLMsg *m = curl_multi_info_read(c->multi, &left);
        if (m == NULL)
            break;
        if (m->msg != CURLMSG_DONE)
            continue;
        struct k8s_request *r = NULL;
        CURLcode result = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        assert(r && r->magic == REQUEST_MAGIC);
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = false;
        if (r->cancelled) {
            req_unlink(r);
            req_free(r);
            continue;
        }
        req_finish(r, result);
    }
}

/* Leaves a busy section; the outermost one applies what was deferred: cancelled requests
 * are removed, new (and retried) ones added, and a requested close carried out. */
static void client_leave(struct k8s_client *c)
{
    assert(c->busy > 0);
    if (c->busy > 1) {
        c->busy--;
        return;
    }
    struct k8s_request *next;
    for (struct k8s_request *r = c->reqs; r; r = next) {
        next = r->next;
        if (r->cancelled) {
            if (r->in_multi)
                curl_multi_remove_handle(c->multi, r->easy);
            r->in_multi = false;
            req_unlink(r);
            req_free(r);
        } else if (!r->in_multi) {
            multi_add(r);
        }
    }
    c->busy--;
    if (c->closing && !c->multi_done) {
        c->multi_done = true;
        /* Closes the cached connections through on_close_socket. */
        curl_multi_cleanup(c->multi);
        c->multi = NULL;
        while (c->socks)
            sock_retire(c->socks);
        uv_close((uv_handle_t *)&c->timer, timer_closed);
    }
}

/* ---- the client ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

struct k8s_client *k8s_client_new(uv_loop_t *loop, const struct k8s_config *cfg,
                                  const struct k8s_client_options *opt, char **err)
{
    *err = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        *err = xasprintf("cannot initialise libcurl: %s", curl_easy_strerror(curl_init_result));
        return NULL;
    }
    if (cfg->server == NULL ||
        !(strncasecmp(cfg->server, "https://", 8) == 0 ||
          (cfg->allow_http && strncasecmp(cfg->server, "http://", 7) == 0))) {
        *err = xasprintf("Kubernetes API server \"%s\": only https:// URLs are accepted",
                         cfg->server ? cfg->server : "");
        return NULL;
    }
    struct k8s_client *c = xcalloc(1, sizeof(*c));
    c->magic = CLIENT_MAGIC;
    c->loop = loop;
    if (opt)
        c->opt = *opt;
    if (c->opt.request_timeout_ms == 0)
        c->opt.request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    if (c->opt.connect_timeout_ms == 0)
        c->opt.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (c->opt.token_check_ms == 0)
        c->opt.token_check_ms = DEFAULT_TOKEN_CHECK_MS;
    if (c->opt.max_body == 0)
        c->opt.max_body = DEFAULT_MAX_BODY;
    c->user_agent = xstrdup(opt && opt->user_agent ? opt->user_agent : "codehub");
    c->opt.user_agent = c->user_agent;
    c->server = xstrdup(cfg->server);
    size_t n = strlen(c->server);
    while (n > 0 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    c->namespace = xstrdup(cfg->namespace ? cfg->namespace : "default");
    c->allow_http = cfg->allow_http;
    c->ca_file = cfg->ca_file ? xstrdup(cfg->ca_file) : NULL;
    blob_copy(&c->ca_data, &cfg->ca_data);
    c->cert_file = cfg->cert_file ? xstrdup(cfg->cert_file) : NULL;
    blob_copy(&c->cert_data, &cfg->cert_data);
    c->key_file = cfg->key_file ? xstrdup(cfg->key_file) : NULL;
    blob_copy(&c->key_data, &cfg->key_data);
    if (cfg->token_file) {
        c->token_file = xstrdup(cfg->token_file);
        int r = k8s_token_file_read(c->token_file, &c->token);
        if (r < 0 || stat(c->token_file, &c->token_st) != 0) {
            *err = xasprintf("token file %s: %s", c->token_file,
                             r == -EINVAL ? "empty or malformed" : strerror(r < 0 ? -r : errno));
            goto fail;
        }
        c->token_checked_ms = uv_now(loop);
    } else if (cfg->token) {
        c->token = xstrdup(cfg->token);
    }
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        *err = xstrdup("cannot create a curl multi handle");
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Idle keep-alive connections kept for reuse. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 16L);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 1;
    return c;
fail:
    if (c->multi)
        curl_multi_cleanup(c->multi);
    c->multi_done = true;
    client_destroy(c);
    return NULL;
}

static void client_destroy(struct k8s_client *c)
{
    void (*done)(void *) = c->close_done;
    void *data = c->close_data;
    free(c->user_agent);
    free(c->server);
    free(c->namespace);
    free(c->ca_file);
    k8s_blob_wipe(&c->ca_data);
    free(c->cert_file);
    k8s_blob_wipe(&c->cert_data);
    free(c->key_file);
    k8s_blob_wipe(&c->key_data);
    k8s_secret_free(c->token);
    free(c->token_file);
    c->magic = 0;
    free(c);
    if (done)
        done(data);
}

void k8s_client_close(struct k8s_client *c, void (*done)(void *data), void *data)
{
    assert(c->magic == CLIENT_MAGIC);
    assert(!c->closing);
    assert(c->watches == 0 && "stop every watch before closing its client");
    c->closing = true;
    c->close_done = done;
    c->close_data = data;
    for (struct k8s_request *r = c->reqs; r; r = r->next)
        r->cancelled = true;
    if (c->busy > 0)
        return; /* the outermost client_leave finishes it */
    c->busy++;
    client_leave(c);
}

uv_loop_t *k8s_client_loop(const struct k8s_client *c)
{
    return c->loop;
}

const char *k8s_client_namespace(const struct k8s_client *c)
{
    return c->namespace;
}

void k8s_client_stats_get(const struct k8s_client *c, struct k8s_client_stats *out)
{
    *out = c->stats;
}

void k8s__client_watch_ref(struct k8s_client *c, int delta)
{
    c->watches += delta;
}
