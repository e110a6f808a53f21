/* Names, manifests and profiles of the kubernetes backend (see spawn/kube.h). Pure
 * functions of the configuration: no I/O, no loop.
 *
 * The settings a profile may override are first gathered into one JSON object keyed like
 * the kube.* config keys; the profile's object is laid over it key by key (a list or
 * mapping in a profile replaces the configured one, it is not merged); the manifest is then
 * built from that object alone. So a profile can change exactly what the admin could
 * configure, and the config check (core/config.c) already validated its types. */
#include "spawn/kube.h"

#include "core/alloc.h"
#include "core/buf.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 63
#define HASH_HEX 8

/* ---- names ---- */

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool hex_digit(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9');
}

/* A name that ends like our hash suffix ("-" and 8 hex digits) is hashed too, so that a
 * user cannot pick a name equal to another user's hashed one. */
static bool looks_hashed(const char *s, size_t len)
{
    if (len < HASH_HEX + 1 || s[len - HASH_HEX - 1] != '-')
        return false;
    for (size_t i = len - HASH_HEX; i < len; i++) {
        if (!hex_digit(s[i]))
            return false;
    }
    return true;
}

static bool safe_as_is(const char *user, size_t room)
{
    size_t len = strlen(user);
    if (len == 0 || len > room || !lower_alnum(user[0]) || !lower_alnum(user[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!lower_alnum(user[i]) && user[i] != '-')
            return false;
    }
    return !looks_hashed(user, len);
}

char *spawn__kube_name(const char *tmpl, const char *user)
{
    const char *at = strstr(tmpl, "{user}");
    size_t pre = at != NULL ? (size_t)(at - tmpl) : strlen(tmpl);
    const char *post = at != NULL ? at + 6 : "";
    size_t postlen = strlen(post);
    size_t room = pre + postlen < NAME_MAX_LEN ? NAME_MAX_LEN - pre - postlen : 0;
    struct buf out = BUF_INIT;
    buf_append(&out, tmpl, pre);
    if (safe_as_is(user, room)) {
        buf_append_str(&out, user);
    } else {
        unsigned char h[crypto_generichash_BYTES_MIN];
        crypto_generichash(h, sizeof h, (const unsigned char *)user, strlen(user), NULL, 0);
        /* The safe characters, '-' for runs of others, no '-' at either end. */
        struct buf s = BUF_INIT;
        for (const char *p = user; *p; p++) {
            char c = lower_alnum(*p) ? *p : '-';
            if (c == '-' && (s.len == 0 || s.data[s.len - 1] == '-'))
                continue;
            buf_append_char(&s, c);
        }
        size_t keep = room > HASH_HEX + 1 ? room - HASH_HEX - 1 : 0;
        if (s.len > keep)
            s.len = keep;
        while (s.len > 0 && s.data[s.len - 1] == '-')
            s.len--;
        if (s.len > 0) {
            buf_append(&out, s.data, s.len);
            buf_append_char(&out, '-');
        }
        buf_free(&s);
        for (size_t i = 0; i < HASH_HEX / 2; i++)
            buf_appendf(&out, "%02x", h[i]);
    }
    buf_append_str(&out, post);
    return buf_steal(&out);
}

char *spawn__kube_user_label(const char *user)
{
    return spawn__kube_name("{user}", user);
}

char *spawn__kube_selector(const struct config *cfg)
{
    return xasprintf("%s=%s,%s=%s", KUBE_APP_LABEL, KUBE_APP_VALUE, KUBE_HUB_LABEL,
                     cfg->kube.hub_name);
}

/* ---- settings and profiles ---- */

/* Config JSON text, already validated by the config check; an empty object or array when
 * it does not parse (only code that bypassed config_finish could cause that). */
static json_t *json_or(const char *text, bool array)
{
    json_t *j = text != NULL ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (j == NULL)
        j = array ? json_array() : json_object();
    return j;
}

static json_t *strings(const struct config_list *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(a, json_string(l->items[i]));
    return a;
}

static json_t *profile_get(const struct config *cfg, const char *profile)
{
    if (profile == NULL || profile[0] == '\0')
        return NULL;
    json_t *all = json_or(cfg->kube.profiles, false);
    json_t *p = json_object_get(all, profile);
    json_incref(p);
    json_decref(all);
    return p;
}

bool spawn__kube_profile_exists(const struct config *cfg, const char *profile)
{
    if (profile == NULL || profile[0] == '\0')
        return true;
    json_t *p = profile_get(cfg, profile);
    bool ok = json_is_object(p);
    json_decref(p);
    return ok;
}

json_t *spawn__kube_profiles_list(const struct config *cfg)
{
    json_t *all = json_or(cfg->kube.profiles, false);
    json_t *out = json_array();
    const char *name;
    json_t *p;
    json_object_foreach(all, name, p)
    {
        const char *display = json_string_value(json_object_get(p, "display_name"));
        const char *desc = json_string_value(json_object_get(p, "description"));
        json_array_append_new(out, json_pack("{s:s, s:s, s:s}", "name", name, "display_name",
                                             display != NULL ? display : name, "description",
                                             desc != NULL ? desc : ""));
    }
    json_decref(all);
    return out;
}

/* Everything a profile may override, from the config, then the profile laid over it. */
static json_t *settings_new(const struct config *cfg, const char *profile, char **err)
{
    json_t *s = json_object();
    json_object_set_new(s, "image", json_string(cfg->kube.image));
    json_object_set_new(s, "image_pull_policy", json_string(cfg->kube.image_pull_policy));
    json_object_set_new(s, "uid", json_integer(cfg->kube.uid));
    json_object_set_new(s, "gid", json_integer(cfg->kube.gid));
    json_object_set_new(s, "fs_gid", json_integer(cfg->kube.fs_gid));
    json_object_set_new(s, "command", strings(&cfg->kube.command));
    json_object_set_new(s, "args", strings(&cfg->kube.args));
    json_object_set_new(s, "env", strings(&cfg->kube.env));
    json_object_set_new(s, "cpu_guarantee", json_string(cfg->kube.cpu_guarantee));
    json_object_set_new(s, "cpu_limit", json_string(cfg->kube.cpu_limit));
    json_object_set_new(s, "mem_guarantee", json_string(cfg->kube.mem_guarantee));
    json_object_set_new(s, "mem_limit", json_string(cfg->kube.mem_limit));
    json_object_set_new(s, "service_account", json_string(cfg->kube.service_account));
    json_object_set_new(s, "automount_service_account_token",
                        json_boolean(cfg->kube.automount_service_account_token));
    json_object_set_new(s, "volumes", json_or(cfg->kube.volumes, true));
    json_object_set_new(s, "volume_mounts", json_or(cfg->kube.volume_mounts, true));
    json_object_set_new(s, "node_selector", json_or(cfg->kube.node_selector, false));
    json_object_set_new(s, "tolerations", json_or(cfg->kube.tolerations, true));
    json_object_set_new(s, "labels", json_or(cfg->kube.labels, false));
    json_object_set_new(s, "annotations", json_or(cfg->kube.annotations, false));
    if (profile != NULL && profile[0] != '\0') {
        json_t *p = profile_get(cfg, profile);
        if (!json_is_object(p)) {
            json_decref(p);
            json_decref(s);
            *err = xasprintf("unknown profile '%s'", profile);
            return NULL;
        }
        json_object_update_existing(s, p);
        json_decref(p);
    }
    return s;
}

static const char *sget(json_t *s, const char *key)
{
    const char *v = json_string_value(json_object_get(s, key));
    return v != NULL ? v : "";
}

/* Copies the array `key` of the settings into `dst` (appending). */
static void append_all(json_t *dst, json_t *s, const char *key)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(s, key), i, v) json_array_append(dst, v);
}

static json_t *metadata(const struct config *cfg, json_t *s, const char *name, const char *user,
                        const char *profile)
{
    json_t *labels = json_deep_copy(json_object_get(s, "labels"));
    if (labels == NULL)
        labels = json_object();
    char *slug = spawn__kube_user_label(user);
    /* Ours last: the watch's selector depends on them, an extra label must not win. */
    json_object_set_new(labels, KUBE_APP_LABEL, json_string(KUBE_APP_VALUE));
    json_object_set_new(labels, KUBE_USER_LABEL, json_string(slug));
    json_object_set_new(labels, KUBE_HUB_LABEL, json_string(cfg->kube.hub_name));
    free(slug);
    json_t *ann = json_deep_copy(json_object_get(s, "annotations"));
    if (ann == NULL)
        ann = json_object();
    json_object_set_new(ann, KUBE_USERNAME_ANNOTATION, json_string(user));
    if (profile != NULL && profile[0] != '\0')
        json_object_set_new(ann, KUBE_PROFILE_ANNOTATION, json_string(profile));
    return json_pack("{s:s, s:o, s:o}", "name", name, "labels", labels, "annotations", ann);
}

static void resource_set(json_t *res, const char *kind, const char *what, const char *value)
{
    if (value[0] == '\0')
        return;
    json_t *k = json_object_get(res, kind);
    if (k == NULL) {
        k = json_object();
        json_object_set_new(res, kind, k);
    }
    json_object_set_new(k, what, json_string(value));
}

static json_t *container(const struct config *cfg, json_t *s, const char *user, const char *profile)
{
    json_t *c = json_object();
    json_object_set_new(c, "name", json_string(KUBE_CONTAINER));
    json_object_set_new(c, "image", json_string(sget(s, "image")));
    json_object_set_new(c, "imagePullPolicy", json_string(sget(s, "image_pull_policy")));
    if (json_array_size(json_object_get(s, "command")) > 0)
        json_object_set(c, "command", json_object_get(s, "command"));
    if (json_array_size(json_object_get(s, "args")) > 0)
        json_object_set(c, "args", json_object_get(s, "args"));
    json_object_set_new(c, "ports",
                        json_pack("[{s:s, s:I, s:s}]", "name", "http", "containerPort",
                                  (json_int_t)cfg->kube.port, "protocol", "TCP"));

    json_t *env = json_array();
    json_array_append_new(env, json_pack("{s:s, s:s}", "name", "CODEHUB_USER", "value", user));
    char port[16];
    snprintf(port, sizeof port, "%lld", (long long)cfg->kube.port);
    json_array_append_new(env, json_pack("{s:s, s:s}", "name", "CODEHUB_PORT", "value", port));
    if (profile != NULL && profile[0] != '\0')
        json_array_append_new(env,
                              json_pack("{s:s, s:s}", "name", "CODEHUB_PROFILE", "value", profile));
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(s, "env"), i, v)
    {
        const char *entry = json_string_value(v);
        const char *eq = entry != NULL ? strchr(entry, '=') : NULL;
        if (eq == NULL)
            continue;
        json_array_append_new(
            env, json_pack("{s:s%, s:s}", "name", entry, (size_t)(eq - entry), "value", eq + 1));
    }
    json_object_set_new(c, "env", env);

    json_t *res = json_object();
    resource_set(res, "requests", "cpu", sget(s, "cpu_guarantee"));
    resource_set(res, "requests", "memory", sget(s, "mem_guarantee"));
    resource_set(res, "limits", "cpu", sget(s, "cpu_limit"));
    resource_set(res, "limits", "memory", sget(s, "mem_limit"));
    json_object_set_new(c, "resources", res);

    json_t *mounts = json_array();
    json_array_append_new(mounts, json_pack("{s:s, s:s}", "name", KUBE_HOME_VOLUME, "mountPath",
                                            cfg->kube.home_mount_path));
    append_all(mounts, s, "volume_mounts");
    json_object_set_new(c, "volumeMounts", mounts);

    /* The kubelet's readiness is half of "ready"; the hub's own GET is the other half. */
    json_object_set_new(c, "readinessProbe",
                        json_pack("{s:{s:s, s:I}, s:i, s:i, s:i}", "httpGet", "path",
                                  cfg->kube.health_path, "port", (json_int_t)cfg->kube.port,
                                  "periodSeconds", 1, "timeoutSeconds", 2, "failureThreshold", 3));
    return c;
}

json_t *spawn__kube_pod_manifest(const struct config *cfg, const char *user, const char *profile,
                                 char **err)
{
    json_t *s = settings_new(cfg, profile, err);
    if (s == NULL)
        return NULL;
    char *name = spawn__kube_name(cfg->kube.pod_name, user);
    char *claim = spawn__kube_name(cfg->kube.pvc_name, user);

    json_t *spec = json_object();
    json_t *sc = json_object();
    static const char *const ids[][2] = {
        {"uid", "runAsUser"}, {"gid", "runAsGroup"}, {"fs_gid", "fsGroup"}};
    for (size_t i = 0; i < 3; i++) {
        json_int_t id = json_integer_value(json_object_get(s, ids[i][0]));
        if (id >= 0)
            json_object_set_new(sc, ids[i][1], json_integer(id));
    }
    json_object_set_new(spec, "securityContext", sc);
    const char *sa = sget(s, "service_account");
    if (sa[0] != '\0')
        json_object_set_new(spec, "serviceAccountName", json_string(sa));
    json_object_set(spec, "automountServiceAccountToken",
                    json_object_get(s, "automount_service_account_token"));
    /* Service links put an environment variable per service of the namespace into the
     * container: noise, and a slow start in a busy namespace. */
    json_object_set_new(spec, "enableServiceLinks", json_false());
    json_object_set_new(spec, "restartPolicy", json_string("Always"));
    json_object_set_new(spec, "terminationGracePeriodSeconds",
                        json_integer(cfg->spawn.stop_timeout));
    if (json_object_size(json_object_get(s, "node_selector")) > 0)
        json_object_set(spec, "nodeSelector", json_object_get(s, "node_selector"));
    if (json_array_size(json_object_get(s, "tolerations")) > 0)
        json_object_set(spec, "tolerations", json_object_get(s, "tolerations"));

    json_t *vols = json_array();
    json_array_append_new(vols, json_pack("{s:s, s:{s:s}}", "name", KUBE_HOME_VOLUME,
                                          "persistentVolumeClaim", "claimName", claim));
    append_all(vols, s, "volumes");
    json_object_set_new(spec, "volumes", vols);
    json_object_set_new(spec, "containers", json_pack("[o]", container(cfg, s, user, profile)));

    json_t *pod = json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "v1", "kind", "Pod", "metadata",
                            metadata(cfg, s, name, user, profile), "spec", spec);
    free(name);
    free(claim);
    json_decref(s);
    return pod;
}

json_t *spawn__kube_pvc_manifest(const struct config *cfg, const char *user)
{
    char *err = NULL;
    json_t *s = settings_new(cfg, NULL, &err);
    char *claim = spawn__kube_name(cfg->kube.pvc_name, user);
    json_t *spec = json_object();
    json_object_set_new(spec, "accessModes", strings(&cfg->kube.storage_access_modes));
    json_object_set_new(spec, "resources",
                        json_pack("{s:{s:s}}", "requests", "storage", cfg->kube.storage_capacity));
    if (cfg->kube.storage_class[0] != '\0')
        json_object_set_new(spec, "storageClassName", json_string(cfg->kube.storage_class));
    json_t *pvc =
        json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "v1", "kind", "PersistentVolumeClaim",
                  "metadata", metadata(cfg, s, claim, user, NULL), "spec", spec);
    free(claim);
    json_decref(s);
    free(err);
    return pvc;
}
