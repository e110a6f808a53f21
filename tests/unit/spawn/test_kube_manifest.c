/* Tests for src/spawn/kube_manifest.c through spawn/kube.h: DNS-safe names, the pod and
 * claim manifests with every kube.* option, and profiles laid over them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config.h"
#include "spawn/kube.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set(struct config *cfg, const char *key, const char *value)
{
    struct buf errors = BUF_INIT;
    if (config_set(cfg, key, value, key, &errors) != 0)
        fail_msg("config_set %s=%s: %s", key, value, errors.data);
    buf_free(&errors);
}

static void cfg_init(struct config *cfg)
{
    struct buf errors = BUF_INIT;
    config_init(cfg);
    set(cfg, "spawn.spawner", "kubernetes");
    assert_int_equal(config_finish(cfg, &errors), 0);
    buf_free(&errors);
}

/* Whether `name` is a DNS-1123 label. */
static bool dns_label(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 63 || name[0] == '-' || name[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

static json_t *path(json_t *j, const char *p)
{
    /* "a.b.0.c": object keys and array indexes. */
    while (j != NULL && *p != '\0') {
        size_t n = strcspn(p, ".");
        char *tok = xstrndup(p, n);
        if (json_is_array(j))
            j = json_array_get(j, strtoul(tok, NULL, 10));
        else
            j = json_object_get(j, tok);
        free(tok);
        p += n;
        if (*p == '.')
            p++;
    }
    return j;
}

static const char *pstr(json_t *j, const char *p)
{
    return json_string_value(path(j, p));
}

/* The value of env entry `name` in the (only) container, or NULL. */
static const char *env_of(json_t *pod, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(path(pod, "spec.containers.0.env"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0)
            return json_string_value(json_object_get(e, "value"));
    }
    return NULL;
}

static void test_names_kept_when_safe(void **state)
{
    char *n = spawn__kube_name("codehub-{user}", "alice");
    assert_string_equal(n, "codehub-alice");
    free(n);
    n = spawn__kube_name("claim-{user}", "a-b-42");
    assert_string_equal(n, "claim-a-b-42");
    free(n);
    n = spawn__kube_name("{user}-ws", "bob");
    assert_string_equal(n, "bob-ws");
    free(n);
    n = spawn__kube_user_label("carol");
    assert_string_equal(n, "carol");
    free(n);
}

static void test_names_hashed_when_needed(void **state)
{
    /* '.', '_', a trailing '-', a leading '-'-like start after replacement... */
    static const char *const users[] = {"a.b",         "a_b",         "a-b-", "x..y", "ab-",
                                        "ab-deadbeef", "ab-0123abcd", "0._-", "z"};
    char *names[sizeof users / sizeof users[0]];
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
        names[i] = spawn__kube_name("codehub-{user}", users[i]);
        assert_true(dns_label(names[i]));
        assert_int_equal(strncmp(names[i], "codehub-", 8), 0);
        /* Deterministic. */
        char *again = spawn__kube_name("codehub-{user}", users[i]);
        assert_string_equal(names[i], again);
        free(again);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(names[i], names[j]);
    }
    /* Safe characters kept, "-" + 8 hex digits appended. */
    assert_int_equal(strncmp(names[0], "codehub-a-b-", 12), 0);
    assert_int_equal(strlen(names[0]), 12 + 8);
    assert_int_equal(strncmp(names[1], "codehub-a-b-", 12), 0);
    assert_string_not_equal(names[0], names[1]); /* a.b and a_b differ by their hash */
    assert_int_equal(strncmp(names[3], "codehub-x-y-", 12), 0);
    /* A name that looks like a hashed one is hashed itself, so no user can take another's. */
    assert_int_equal(strncmp(names[5], "codehub-ab-deadbeef-", 20), 0);
    /* A plain name is not hashed. */
    assert_string_equal(names[8], "codehub-z");
    /* The hash is of the exact name: BLAKE2b, first 4 bytes. */
    unsigned char h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, (const unsigned char *)"a.b", 3, NULL, 0);
    char hex[9];
    snprintf(hex, sizeof hex, "%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
    assert_string_equal(names[0] + 12, hex);
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        free(names[i]);
}

static void test_names_long(void **state)
{
    /* 32 characters (the longest user name) in a long template: cut to fit 63. */
    const char *user = "abcdefghijklmnopqrstuvwxyz012345";
    char *n = spawn__kube_name("a-very-long-prefix-for-pods-{user}-ws", user);
    assert_true(dns_label(n));
    assert_int_equal(strlen(n), 63);
    assert_int_equal(strncmp(n, "a-very-long-prefix-for-pods-", 28), 0);
    assert_int_equal(strcmp(n + strlen(n) - 3, "-ws"), 0);
    char *other = spawn__kube_name("a-very-long-prefix-for-pods-{user}-ws",
                                   "abcdefghijklmnopqrstuvwxyz012346");
    assert_string_not_equal(n, other);
    free(other);
    free(n);
    /* Fits: kept as is. */
    n = spawn__kube_name("codehub-{user}", user);
    assert_string_equal(n, "codehub-abcdefghijklmnopqrstuvwxyz012345");
    free(n);
    /* Label values too stay within 63. */
    n = spawn__kube_user_label("a.bcdefghijklmnopqrstuvwxyz01234");
    assert_true(dns_label(n));
    free(n);
}

static void test_selector(void **state)
{
    struct config cfg;
    cfg_init(&cfg);
    set(&cfg, "kube.hub_name", "prod");
    char *sel = spawn__kube_selector(&cfg);
    assert_string_equal(sel, "app=codehub-workspace,codehub.io/hub=prod");
    free(sel);
    config_free(&cfg);
}

static void test_pod_defaults(void **state)
{
    struct config cfg;
    cfg_init(&cfg);
    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(&cfg, "a.b", NULL, &err);
    assert_non_null(pod);
    assert_null(err);
    char *name = spawn__kube_name("codehub-{user}", "a.b");
    char *claim = spawn__kube_name("claim-{user}", "a.b");
    char *label = spawn__kube_user_label("a.b");
    assert_string_equal(pstr(pod, "apiVersion"), "v1");
    assert_string_equal(pstr(pod, "kind"), "Pod");
    assert_string_equal(pstr(pod, "metadata.name"), name);
    json_t *labels = path(pod, "metadata.labels");
    assert_int_equal(json_object_size(labels), 3);
    assert_string_equal(pstr(labels, "app"), "codehub-workspace");
    assert_string_equal(json_string_value(json_object_get(labels, "codehub.io/user")), label);
    assert_string_equal(json_string_value(json_object_get(labels, "codehub.io/hub")), "codehub");
    json_t *ann = path(pod, "metadata.annotations");
    assert_int_equal(json_object_size(ann), 1);
    assert_string_equal(json_string_value(json_object_get(ann, "codehub.io/username")), "a.b");

    json_t *spec = path(pod, "spec");
    assert_int_equal(json_object_size(path(spec, "securityContext")), 0);
    assert_null(path(spec, "serviceAccountName"));
    assert_true(json_is_false(path(spec, "automountServiceAccountToken")));
    assert_true(json_is_false(path(spec, "enableServiceLinks")));
    assert_int_equal(json_integer_value(path(spec, "terminationGracePeriodSeconds")), 10);
    assert_null(path(spec, "nodeSelector"));
    assert_null(path(spec, "tolerations"));
    assert_int_equal(json_array_size(path(spec, "volumes")), 1);
    assert_string_equal(pstr(spec, "volumes.0.name"), "home");
    assert_string_equal(pstr(spec, "volumes.0.persistentVolumeClaim.claimName"), claim);

    json_t *c = path(spec, "containers.0");
    assert_int_equal(json_array_size(path(spec, "containers")), 1);
    assert_string_equal(pstr(c, "name"), "workspace");
    assert_string_equal(pstr(c, "image"), "codehub/workspace:latest");
    assert_string_equal(pstr(c, "imagePullPolicy"), "IfNotPresent");
    assert_null(path(c, "command"));
    assert_null(path(c, "args"));
    assert_int_equal(json_integer_value(path(c, "ports.0.containerPort")), 8080);
    assert_int_equal(json_object_size(path(c, "resources")), 0);
    assert_int_equal(json_array_size(path(c, "volumeMounts")), 1);
    assert_string_equal(pstr(c, "volumeMounts.0.mountPath"), "/home/coder");
    assert_string_equal(pstr(c, "readinessProbe.httpGet.path"), "/healthz");
    assert_int_equal(json_integer_value(path(c, "readinessProbe.httpGet.port")), 8080);
    assert_string_equal(env_of(pod, "CODEHUB_USER"), "a.b");
    assert_string_equal(env_of(pod, "CODEHUB_PORT"), "8080");
    assert_null(env_of(pod, "CODEHUB_PROFILE"));
    free(name);
    free(claim);
    free(label);
    json_decref(pod);
    config_free(&cfg);
}

static void test_pod_every_option(void **state)
{
    struct config cfg;
    cfg_init(&cfg);
    set(&cfg, "kube.hub_name", "h1");
    set(&cfg, "kube.image", "reg.example/ws:2");
    set(&cfg, "kube.image_pull_policy", "Always");
    set(&cfg, "kube.uid", "1000");
    set(&cfg, "kube.gid", "0");
    set(&cfg, "kube.fs_gid", "100");
    set(&cfg, "kube.port", "9999");
    set(&cfg, "kube.health_path", "/ping");
    set(&cfg, "kube.command", "/bin/entry, --flag");
    set(&cfg, "kube.args", "--bind-addr, 0.0.0.0:9999");
    set(&cfg, "kube.env", "A=1, URL=http://x/?a=b, EMPTY=");
    set(&cfg, "kube.cpu_guarantee", "250m");
    set(&cfg, "kube.cpu_limit", "2");
    set(&cfg, "kube.mem_guarantee", "1Gi");
    set(&cfg, "kube.mem_limit", "4Gi");
    set(&cfg, "kube.service_account", "workspace");
    set(&cfg, "kube.automount_service_account_token", "true");
    set(&cfg, "kube.volumes",
        "[{\"name\":\"docker\",\"hostPath\":{\"path\":\"/var/run/docker.sock\"}}]");
    set(&cfg, "kube.volume_mounts",
        "[{\"name\":\"docker\",\"mountPath\":\"/var/run/docker.sock\"}]");
    set(&cfg, "kube.home_mount_path", "/home/me");
    set(&cfg, "kube.pod_name", "ws-{user}");
    set(&cfg, "kube.pvc_name", "home-{user}");
    set(&cfg, "kube.node_selector", "{\"disktype\":\"ssd\"}");
    set(&cfg, "kube.tolerations", "[{\"key\":\"gpu\",\"operator\":\"Exists\"}]");
    /* An extra label cannot replace codehub's own (the watch selects on them). */
    set(&cfg, "kube.labels", "{\"team\":\"a\",\"app\":\"mine\"}");
    set(&cfg, "kube.annotations", "{\"note\":\"x y\"}");
    set(&cfg, "spawn.stop_timeout", "30s");
    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(&cfg, "ann", NULL, &err);
    assert_non_null(pod);
    assert_string_equal(pstr(pod, "metadata.name"), "ws-ann");
    json_t *labels = path(pod, "metadata.labels");
    assert_string_equal(pstr(labels, "team"), "a");
    assert_string_equal(pstr(labels, "app"), "codehub-workspace");
    assert_string_equal(json_string_value(json_object_get(labels, "codehub.io/hub")), "h1");
    assert_string_equal(pstr(pod, "metadata.annotations.note"), "x y");
    json_t *spec = path(pod, "spec");
    assert_int_equal(json_integer_value(path(spec, "securityContext.runAsUser")), 1000);
    assert_int_equal(json_integer_value(path(spec, "securityContext.runAsGroup")), 0);
    assert_int_equal(json_integer_value(path(spec, "securityContext.fsGroup")), 100);
    assert_string_equal(pstr(spec, "serviceAccountName"), "workspace");
    assert_true(json_is_true(path(spec, "automountServiceAccountToken")));
    assert_int_equal(json_integer_value(path(spec, "terminationGracePeriodSeconds")), 30);
    assert_string_equal(pstr(spec, "nodeSelector.disktype"), "ssd");
    assert_string_equal(pstr(spec, "tolerations.0.key"), "gpu");
    assert_int_equal(json_array_size(path(spec, "volumes")), 2);
    assert_string_equal(pstr(spec, "volumes.0.persistentVolumeClaim.claimName"), "home-ann");
    assert_string_equal(pstr(spec, "volumes.1.hostPath.path"), "/var/run/docker.sock");
    json_t *c = path(spec, "containers.0");
    assert_string_equal(pstr(c, "image"), "reg.example/ws:2");
    assert_string_equal(pstr(c, "imagePullPolicy"), "Always");
    assert_string_equal(pstr(c, "command.0"), "/bin/entry");
    assert_string_equal(pstr(c, "command.1"), "--flag");
    assert_string_equal(pstr(c, "args.1"), "0.0.0.0:9999");
    assert_int_equal(json_integer_value(path(c, "ports.0.containerPort")), 9999);
    assert_string_equal(pstr(c, "resources.requests.cpu"), "250m");
    assert_string_equal(pstr(c, "resources.requests.memory"), "1Gi");
    assert_string_equal(pstr(c, "resources.limits.cpu"), "2");
    assert_string_equal(pstr(c, "resources.limits.memory"), "4Gi");
    assert_string_equal(pstr(c, "volumeMounts.0.mountPath"), "/home/me");
    assert_string_equal(pstr(c, "volumeMounts.1.name"), "docker");
    assert_string_equal(pstr(c, "readinessProbe.httpGet.path"), "/ping");
    assert_int_equal(json_integer_value(path(c, "readinessProbe.httpGet.port")), 9999);
    assert_string_equal(env_of(pod, "A"), "1");
    assert_string_equal(env_of(pod, "URL"), "http://x/?a=b");
    assert_string_equal(env_of(pod, "EMPTY"), "");
    assert_string_equal(env_of(pod, "CODEHUB_PORT"), "9999");
    json_decref(pod);

    /* Only the limits set appear. */
    set(&cfg, "kube.cpu_guarantee", "");
    set(&cfg, "kube.mem_guarantee", "");
    set(&cfg, "kube.mem_limit", "");
    pod = spawn__kube_pod_manifest(&cfg, "ann", NULL, &err);
    assert_null(path(pod, "spec.containers.0.resources.requests"));
    assert_int_equal(json_object_size(path(pod, "spec.containers.0.resources.limits")), 1);
    json_decref(pod);
    config_free(&cfg);
}

static const char profiles[] =
    "{\"gpu\":{\"display_name\":\"GPU box\",\"description\":\"for training\","
    "\"image\":\"ws-cuda:1\",\"cpu_limit\":\"8\",\"env\":[\"CUDA=1\"],"
    "\"node_selector\":{\"gpu\":\"yes\"},\"tolerations\":[],\"uid\":0,"
    "\"automount_service_account_token\":true,\"labels\":{\"tier\":\"gpu\"}},"
    "\"small\":{\"mem_limit\":\"512Mi\"}}";

static void test_profiles(void **state)
{
    struct config cfg;
    cfg_init(&cfg);
    set(&cfg, "kube.cpu_limit", "2");
    set(&cfg, "kube.mem_limit", "4Gi");
    set(&cfg, "kube.env", "A=1");
    set(&cfg, "kube.uid", "1000");
    set(&cfg, "kube.tolerations", "[{\"key\":\"dedicated\",\"operator\":\"Exists\"}]");
    set(&cfg, "kube.labels", "{\"team\":\"a\"}");
    set(&cfg, "kube.profiles", profiles);

    assert_true(spawn__kube_profile_exists(&cfg, NULL));
    assert_true(spawn__kube_profile_exists(&cfg, ""));
    assert_true(spawn__kube_profile_exists(&cfg, "gpu"));
    assert_false(spawn__kube_profile_exists(&cfg, "cpu"));
    assert_false(spawn__kube_profile_exists(&cfg, "display_name"));

    json_t *list = spawn__kube_profiles_list(&cfg);
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(pstr(list, "0.name"), "gpu");
    assert_string_equal(pstr(list, "0.display_name"), "GPU box");
    assert_string_equal(pstr(list, "0.description"), "for training");
    assert_string_equal(pstr(list, "1.display_name"), "small"); /* defaults to the name */
    assert_string_equal(pstr(list, "1.description"), "");
    json_decref(list);

    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(&cfg, "ann", "gpu", &err);
    assert_non_null(pod);
    json_t *c = path(pod, "spec.containers.0");
    assert_string_equal(pstr(c, "image"), "ws-cuda:1");
    assert_string_equal(pstr(c, "resources.limits.cpu"), "8");      /* replaced */
    assert_string_equal(pstr(c, "resources.limits.memory"), "4Gi"); /* kept */
    assert_string_equal(env_of(pod, "CUDA"), "1");
    assert_null(env_of(pod, "A")); /* a list is replaced, not merged */
    assert_string_equal(env_of(pod, "CODEHUB_PROFILE"), "gpu");
    assert_int_equal(json_integer_value(path(pod, "spec.securityContext.runAsUser")), 0);
    assert_true(json_is_true(path(pod, "spec.automountServiceAccountToken")));
    assert_string_equal(pstr(pod, "spec.nodeSelector.gpu"), "yes");
    assert_null(path(pod, "spec.tolerations")); /* an empty list replaces the configured one */
    assert_string_equal(pstr(pod, "metadata.labels.tier"), "gpu");
    assert_null(path(pod, "metadata.labels.team"));
    assert_string_equal(pstr(pod, "metadata.labels.app"), "codehub-workspace");
    assert_string_equal(
        json_string_value(json_object_get(path(pod, "metadata.annotations"), "codehub.io/profile")),
        "gpu");
    /* display_name and description are not pod settings. */
    char *text = json_dumps(pod, 0);
    assert_null(strstr(text, "GPU box"));
    free(text);
    json_decref(pod);

    pod = spawn__kube_pod_manifest(&cfg, "ann", "small", &err);
    assert_string_equal(pstr(pod, "spec.containers.0.resources.limits.memory"), "512Mi");
    assert_string_equal(pstr(pod, "spec.containers.0.resources.limits.cpu"), "2");
    assert_string_equal(env_of(pod, "A"), "1");
    json_decref(pod);

    assert_null(spawn__kube_pod_manifest(&cfg, "ann", "nope", &err));
    assert_string_equal(err, "unknown profile 'nope'");
    free(err);
    config_free(&cfg);
}

static void test_pvc(void **state)
{
    struct config cfg;
    cfg_init(&cfg);
    json_t *pvc = spawn__kube_pvc_manifest(&cfg, "ann");
    assert_string_equal(pstr(pvc, "kind"), "PersistentVolumeClaim");
    assert_string_equal(pstr(pvc, "metadata.name"), "claim-ann");
    assert_string_equal(pstr(pvc, "metadata.labels.app"), "codehub-workspace");
    assert_string_equal(json_string_value(json_object_get(path(pvc, "metadata.annotations"),
                                                          "codehub.io/username")),
                        "ann");
    assert_string_equal(pstr(pvc, "spec.resources.requests.storage"), "10Gi");
    assert_string_equal(pstr(pvc, "spec.accessModes.0"), "ReadWriteOnce");
    assert_int_equal(json_array_size(path(pvc, "spec.accessModes")), 1);
    assert_null(path(pvc, "spec.storageClassName"));
    json_decref(pvc);

    set(&cfg, "kube.storage_capacity", "50Gi");
    set(&cfg, "kube.storage_class", "fast-ssd");
    set(&cfg, "kube.storage_access_modes", "ReadWriteMany, ReadOnlyMany");
    set(&cfg, "kube.pvc_name", "home-{user}-v2");
    set(&cfg, "kube.labels", "{\"team\":\"a\"}");
    pvc = spawn__kube_pvc_manifest(&cfg, "Ann_x");
    char *name = spawn__kube_name("home-{user}-v2", "Ann_x");
    assert_string_equal(pstr(pvc, "metadata.name"), name);
    assert_true(dns_label(name));
    assert_string_equal(pstr(pvc, "metadata.labels.team"), "a");
    assert_string_equal(pstr(pvc, "spec.resources.requests.storage"), "50Gi");
    assert_string_equal(pstr(pvc, "spec.storageClassName"), "fast-ssd");
    assert_string_equal(pstr(pvc, "spec.accessModes.1"), "ReadOnlyMany");
    free(name);
    json_decref(pvc);
    config_free(&cfg);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_kept_when_safe),
        cmocka_unit_test(test_names_hashed_when_needed),
        cmocka_unit_test(test_names_long),
        cmocka_unit_test(test_selector),
        cmocka_unit_test(test_pod_defaults),
        cmocka_unit_test(test_pod_every_option),
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_pvc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
