/* The store's front: URL dispatch, argument checks, and the result structs' memory.
 * Everything database-specific is behind struct store_backend (backend.h). */
#include "store/store.h"

#include "core/alloc.h"
#include "core/log.h"
#include "store/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- result structs ---------------------------------------------------------------- */

void store_user_clear(struct store_user *u)
{
    if (u == NULL)
        return;
    free(u->name);
    free(u->password_hash);
    memset(u, 0, sizeof *u);
}

void store_session_clear(struct store_session *s)
{
    if (s == NULL)
        return;
    free(s->id_hash);
    free(s->user_name);
    free(s->client_addr);
    memset(s, 0, sizeof *s);
}

void store_token_clear(struct store_token *t)
{
    if (t == NULL)
        return;
    free(t->hash);
    free(t->prefix);
    free(t->user_name);
    free(t->note);
    memset(t, 0, sizeof *t);
}

void store_server_clear(struct store_server *s)
{
    if (s == NULL)
        return;
    free(s->user_name);
    free(s->state);
    free(s->url);
    free(s->spawner_state);
    free(s->message);
    free(s->owner);
    memset(s, 0, sizeof *s);
}

void store_replica_clear(struct store_replica *r)
{
    if (r == NULL)
        return;
    free(r->id);
    free(r->address);
    memset(r, 0, sizeof *r);
}

void store_event_clear(struct store_event *e)
{
    if (e == NULL)
        return;
    free(e->kind);
    free(e->user);
    free(e->actor);
    free(e->detail);
    memset(e, 0, sizeof *e);
}

void store_users_free(struct store_user *users, size_t n)
{
    for (size_t i = 0; users != NULL && i < n; i++)
        store_user_clear(&users[i]);
    free(users);
}

void store_tokens_free(struct store_token *tokens, size_t n)
{
    for (size_t i = 0; tokens != NULL && i < n; i++)
        store_token_clear(&tokens[i]);
    free(tokens);
}

void store_servers_free(struct store_server *servers, size_t n)
{
    for (size_t i = 0; servers != NULL && i < n; i++)
        store_server_clear(&servers[i]);
    free(servers);
}

void store_events_free(struct store_event *events, size_t n)
{
    for (size_t i = 0; events != NULL && i < n; i++)
        store_event_clear(&events[i]);
    free(events);
}

void store_replicas_free(struct store_replica *replicas, size_t n)
{
    for (size_t i = 0; replicas != NULL && i < n; i++)
        store_replica_clear(&replicas[i]);
    free(replicas);
}

/* ---- helpers ----------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The user-name rule of store.h, [a-z0-9][a-z0-9._-]{0,31}. Names become URL path
 * segments and directory names, so the store refuses to hold any other. */
static bool user_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

static bool server_state_valid(const char *state)
{
    static const char *const states[] = {"stopped", "starting", "running", "stopping", "failed"};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strcmp(state, states[i]) == 0)
            return true;
    return false;
}

/* Starts a list call: clears its outputs (`out` points to the caller's array pointer, of
 * `out_size` bytes). Returns false when one of them or the store is missing. */
static bool list_start(const struct store *st, void *out, size_t out_size, size_t *n_out)
{
    if (out != NULL)
        memset(out, 0, out_size);
    if (n_out != NULL)
        *n_out = 0;
    return st != NULL && out != NULL && n_out != NULL;
}

/* A copy of server row `s` with the documented defaults filled in, so that backends see no
 * NULLs. The strings stay borrowed from `s`. */
static struct store_server server_row(const struct store_server *s)
{
    struct store_server row = *s;
    row.user_name = NULL;
    if (row.url == NULL)
        row.url = "";
    if (row.spawner_state == NULL)
        row.spawner_state = "{}";
    if (row.message == NULL)
        row.message = "";
    if (row.owner == NULL)
        row.owner = "";
    if (row.updated_ms == 0)
        row.updated_ms = now_ms();
    row.stop_requested = false;
    return row;
}

/* mkdir -p with `mode` for every directory it creates. Returns 0 or a negative errno. */
static int mkdir_parents(const char *path, mode_t mode)
{
    int rc = 0;
    char *copy = xstrdup(path);
    for (char *p = copy + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, mode) != 0 && errno != EEXIST) {
            rc = -errno;
            goto done;
        }
        *p = '/';
    }
    if (mkdir(copy, mode) != 0 && errno != EEXIST) {
        rc = -errno;
        goto done;
    }
    struct stat st;
    if (stat(copy, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if (!S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
done:
    free(copy);
    return rc;
}

/* Overwrites a secret before it is freed, so that it does not linger in freed memory. */
static void free_secret(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

/* Reads the PostgreSQL password from the first line of `path` (a trailing CR LF or LF is not
 * part of it). Returns the password (caller frees with free_secret), or NULL with *msg set
 * (caller frees); no message holds the file's content. */
static char *password_file_read(const char *path, char **msg)
{
    char *line = NULL;
    char data[4096];
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *msg = xasprintf("cannot read store.password_file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 007) != 0) {
        /* A Kubernetes Secret is mounted 0644 by default: warn rather than refuse. Group
         * read is how a pod's fsGroup reaches it (0440), so only others count. */
        char mode[8];
        snprintf(mode, sizeof mode, "%04o", (unsigned)(sb.st_mode & 07777));
        log_event(LOG_WARN, "store.password_file_mode", "file", path, "mode", mode, "hint",
                  "readable by others; chmod 0600 (or 0440 for a group)", (const char *)NULL);
    }
    for (;;) {
        ssize_t n = read(fd, data + len, sizeof data - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *msg = xasprintf("cannot read store.password_file %s: %s", path, strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (memchr(data, '\n', len) != NULL || len == sizeof data - 1)
            break;
    }
    data[len] = '\0';
    size_t end = strcspn(data, "\n");
    if (end > 0 && data[end - 1] == '\r')
        end--;
    if (end == 0) {
        *msg = xasprintf("store.password_file %s is empty", path);
        goto done;
    }
    if (memchr(data, '\0', end) != NULL) {
        *msg = xasprintf("store.password_file %s holds a NUL byte", path);
        goto done;
    }
    line = xstrndup(data, end);
done:
    explicit_bzero(data, sizeof data);
    close(fd);
    return line;
}

/* ---- open / close ------------------------------------------------------------------ */

struct store *store_open(const char *url, const char *data_dir, char **err)
{
    return store_open_password(url, data_dir, NULL, err);
}

struct store *store_open_password(const char *url, const char *data_dir, const char *password_file,
                                  char **err)
{
    return store_open_pool(url, data_dir, password_file, 0, err);
}

struct store *store_open_pool(const char *url, const char *data_dir, const char *password_file,
                              unsigned pool_size, char **err)
{
    const struct store_backend *be = NULL;
    char *target = NULL;
    char *password = NULL;
    char *msg = NULL;
    struct store *st = NULL;

    if (err != NULL)
        *err = NULL;
    if (url == NULL)
        url = "";
    if (password_file != NULL && password_file[0] == '\0')
        password_file = NULL;

    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        if (password_file != NULL) {
            password = password_file_read(password_file, &msg);
            if (password == NULL)
                goto fail;
        }
        target = xstrdup(url);
        be = &store__pg_backend;
    } else if (password_file != NULL) {
        msg = xstrdup("store.password_file applies to PostgreSQL only");
        goto fail;
    } else if (url[0] == '\0' || strcmp(url, "sqlite:") == 0) {
        if (data_dir == NULL || data_dir[0] == '\0') {
            msg = xstrdup("the default SQLite store needs a data directory");
            goto fail;
        }
        /* The data directory holds the database and users' homes: owner only. */
        int rc = mkdir_parents(data_dir, 0700);
        if (rc < 0) {
            msg = xasprintf("cannot create data directory %s: %s", data_dir, strerror(-rc));
            goto fail;
        }
        size_t len = strlen(data_dir);
        while (len > 1 && data_dir[len - 1] == '/')
            len--;
        target = xasprintf("%.*s/codehub.sqlite", (int)len, data_dir);
        be = &store__sqlite_backend;
    } else if (strncmp(url, "sqlite:", 7) == 0) {
        target = xstrdup(url + 7);
        be = &store__sqlite_backend;
    } else {
        msg = xstrdup("unknown store URL scheme");
        goto fail;
    }

    void *impl = be->open(target, password, pool_size, &msg);
    if (impl == NULL)
        goto fail;
    st = xcalloc(1, sizeof *st);
    st->be = be;
    st->impl = impl;
    free(target);
    free_secret(password);
    return st;

fail:
    free(target);
    free_secret(password);
    if (msg == NULL)
        msg = xstrdup("cannot open the store");
    if (err != NULL)
        *err = msg;
    else
        free(msg);
    return NULL;
}

void store_close(struct store *st)
{
    if (st == NULL)
        return;
    st->be->close(st->impl);
    free(st);
}

bool store_is_shared(struct store *st)
{
    return st != NULL && st->be == &store__pg_backend;
}

int store_schema_version(struct store *st, int *out)
{
    if (st == NULL || out == NULL)
        return -EINVAL;
    *out = 0;
    return st->be->schema_version(st->impl, out);
}

/* ---- meta -------------------------------------------------------------------------- */

int store_meta_get(struct store *st, const char *key, char **value_out)
{
    if (value_out != NULL)
        *value_out = NULL;
    if (st == NULL || key == NULL || value_out == NULL)
        return -EINVAL;
    return st->be->meta_get(st->impl, key, value_out);
}

int store_meta_get_or_set(struct store *st, const char *key, const char *value, char **value_out)
{
    if (value_out != NULL)
        *value_out = NULL;
    if (st == NULL || key == NULL || value == NULL || value_out == NULL)
        return -EINVAL;
    return st->be->meta_get_or_set(st->impl, key, value, value_out);
}

/* ---- users ------------------------------------------------------------------------- */

int store_user_create(struct store *st, const char *name, const char *password_hash, bool admin,
                      struct store_user *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || name == NULL || !user_name_valid(name))
        return -EINVAL;
    int64_t now = now_ms(), id = 0;
    int rc = st->be->user_create(st->impl, name, password_hash, admin, now, &id);
    if (rc == 0 && out != NULL) {
        out->id = id;
        out->name = xstrdup(name);
        out->password_hash = password_hash != NULL ? xstrdup(password_hash) : NULL;
        out->admin = admin;
        out->created_ms = now;
        out->last_activity_ms = 0;
    }
    return rc;
}

int store_user_get(struct store *st, const char *name, struct store_user *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || name == NULL || out == NULL)
        return -EINVAL;
    return st->be->user_get(st->impl, name, out);
}

int store_user_get_by_id(struct store *st, int64_t id, struct store_user *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || out == NULL)
        return -EINVAL;
    return st->be->user_get_by_id(st->impl, id, out);
}

int store_user_list(struct store *st, size_t offset, size_t limit, struct store_user **out,
                    size_t *n_out, size_t *total_out)
{
    if (total_out != NULL)
        *total_out = 0;
    if (!list_start(st, out, sizeof *out, n_out))
        return -EINVAL;
    return st->be->user_list(st->impl, offset, limit, out, n_out, total_out);
}

int store_user_count(struct store *st, size_t *out)
{
    if (out != NULL)
        *out = 0;
    if (st == NULL || out == NULL)
        return -EINVAL;
    return st->be->user_count(st->impl, out);
}

int store_user_set_admin(struct store *st, const char *name, bool admin)
{
    if (st == NULL || name == NULL)
        return -EINVAL;
    return st->be->user_set_admin(st->impl, name, admin);
}

int store_user_set_password(struct store *st, const char *name, const char *password_hash,
                            bool drop_sessions)
{
    if (st == NULL || name == NULL)
        return -EINVAL;
    return st->be->user_set_password(st->impl, name, password_hash, drop_sessions);
}

int store_user_claim_password(struct store *st, const char *name, const char *password_hash)
{
    if (st == NULL || name == NULL || password_hash == NULL)
        return -EINVAL;
    return st->be->user_claim_password(st->impl, name, password_hash);
}

int store_user_touch(struct store *st, int64_t user_id, int64_t activity_ms)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->user_touch(st->impl, user_id, activity_ms);
}

int store_user_delete(struct store *st, const char *name)
{
    if (st == NULL || name == NULL)
        return -EINVAL;
    return st->be->user_delete(st->impl, name);
}

/* ---- sessions ---------------------------------------------------------------------- */

int store_session_create(struct store *st, const char *id_hash, int64_t user_id, int64_t expires_ms,
                         const char *client_addr)
{
    /* Expiry times are never negative: 0 means "never", and the expiry queries rely on
     * every other value being positive. */
    if (st == NULL || id_hash == NULL || id_hash[0] == '\0' || expires_ms < 0)
        return -EINVAL;
    return st->be->session_create(st->impl, id_hash, user_id, now_ms(), expires_ms,
                                  client_addr != NULL ? client_addr : "");
}

int store_session_get(struct store *st, const char *id_hash, int64_t now, struct store_session *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || id_hash == NULL || out == NULL)
        return -EINVAL;
    return st->be->session_get(st->impl, id_hash, now, out);
}

int store_session_touch(struct store *st, const char *id_hash, int64_t now)
{
    if (st == NULL || id_hash == NULL)
        return -EINVAL;
    return st->be->session_touch(st->impl, id_hash, now);
}

int store_session_delete(struct store *st, const char *id_hash)
{
    if (st == NULL || id_hash == NULL)
        return -EINVAL;
    return st->be->session_delete(st->impl, id_hash);
}

int store_session_delete_user(struct store *st, int64_t user_id)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->session_delete_user(st->impl, user_id);
}

int store_session_count(struct store *st, int64_t now, size_t *out)
{
    if (out != NULL)
        *out = 0;
    if (st == NULL || out == NULL)
        return -EINVAL;
    return st->be->session_count(st->impl, now, out);
}

int store_expire(struct store *st, int64_t now, size_t *removed_out)
{
    size_t removed = 0;
    if (removed_out != NULL)
        *removed_out = 0;
    if (st == NULL)
        return -EINVAL;
    int rc = st->be->expire(st->impl, now, &removed);
    if (rc == 0 && removed_out != NULL)
        *removed_out = removed;
    return rc;
}

/* ---- tokens ------------------------------------------------------------------------ */

int store_token_create(struct store *st, const char *hash, const char *prefix, int64_t user_id,
                       enum store_token_scope scope, const char *note, int64_t expires_ms,
                       struct store_token *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || hash == NULL || hash[0] == '\0' || prefix == NULL || expires_ms < 0)
        return -EINVAL;
    if (scope != STORE_SCOPE_USER && scope != STORE_SCOPE_ADMIN)
        return -EINVAL;
    return st->be->token_create(st->impl, hash, prefix, user_id, scope, note != NULL ? note : "",
                                now_ms(), expires_ms, out);
}

int store_token_get(struct store *st, const char *hash, int64_t now, struct store_token *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || hash == NULL || out == NULL)
        return -EINVAL;
    return st->be->token_get(st->impl, hash, now, out);
}

int store_token_list(struct store *st, int64_t user_id, struct store_token **out, size_t *n_out)
{
    if (!list_start(st, out, sizeof *out, n_out))
        return -EINVAL;
    return st->be->token_list(st->impl, user_id, out, n_out);
}

int store_token_delete(struct store *st, int64_t user_id, int64_t token_id)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->token_delete(st->impl, user_id, token_id);
}

int store_token_touch(struct store *st, int64_t token_id, int64_t now)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->token_touch(st->impl, token_id, now);
}

/* ---- servers ----------------------------------------------------------------------- */

int store_server_get(struct store *st, int64_t user_id, struct store_server *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || out == NULL)
        return -EINVAL;
    return st->be->server_get(st->impl, user_id, out);
}

int store_server_put(struct store *st, const struct store_server *s)
{
    if (st == NULL || s == NULL || s->state == NULL || !server_state_valid(s->state))
        return -EINVAL;
    struct store_server row = server_row(s);
    return st->be->server_put(st->impl, &row);
}

int store_server_list_active(struct store *st, struct store_server **out, size_t *n_out)
{
    if (!list_start(st, out, sizeof *out, n_out))
        return -EINVAL;
    return st->be->server_list_active(st->impl, out, n_out);
}

int store_server_delete(struct store *st, int64_t user_id)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->server_delete(st->impl, user_id);
}

int store_server_claim(struct store *st, const struct store_server *s,
                       struct store_server *current_out)
{
    if (current_out != NULL)
        memset(current_out, 0, sizeof *current_out);
    /* A claim always writes "starting"; a caller that says anything else has a bug. */
    if (st == NULL || s == NULL || (s->state != NULL && strcmp(s->state, "starting") != 0))
        return -EINVAL;
    struct store_server row = server_row(s);
    row.state = "starting";
    return st->be->server_claim(st->impl, &row, current_out);
}

int store_server_adopt(struct store *st, int64_t user_id, const char *from_owner,
                       const char *to_owner, struct store_server *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (st == NULL || from_owner == NULL || to_owner == NULL)
        return -EINVAL;
    return st->be->server_adopt(st->impl, user_id, from_owner, to_owner, out);
}

int store_server_request_stop(struct store *st, int64_t user_id)
{
    if (st == NULL)
        return -EINVAL;
    return st->be->server_request_stop(st->impl, user_id);
}

/* ---- replicas ---------------------------------------------------------------------- */

int store_replica_beat(struct store *st, const char *id, const char *address, int64_t started_ms)
{
    if (st == NULL || id == NULL || id[0] == '\0')
        return -EINVAL;
    return st->be->replica_beat(st->impl, id, address != NULL ? address : "", started_ms, now_ms());
}

int store_replica_list(struct store *st, struct store_replica **out, size_t *n_out)
{
    if (!list_start(st, out, sizeof *out, n_out))
        return -EINVAL;
    return st->be->replica_list(st->impl, out, n_out);
}

int store_replica_delete(struct store *st, const char *id)
{
    if (st == NULL || id == NULL)
        return -EINVAL;
    return st->be->replica_delete(st->impl, id);
}

/* ---- events ------------------------------------------------------------------------ */

int store_event_add(struct store *st, const char *kind, const char *user, const char *actor,
                    const char *detail)
{
    if (st == NULL || kind == NULL || kind[0] == '\0')
        return -EINVAL;
    return st->be->event_add(st->impl, now_ms(), kind, user != NULL ? user : "",
                             actor != NULL ? actor : "", detail != NULL ? detail : "");
}

int store_event_list(struct store *st, size_t limit, struct store_event **out, size_t *n_out)
{
    if (!list_start(st, out, sizeof *out, n_out))
        return -EINVAL;
    return st->be->event_list(st->impl, limit, out, n_out);
}
