/* The kubernetes backend's pure parts (kube_manifest.c): object names, the pod and volume
 * claim manifests, and profiles. They depend on the configuration only, never on the
 * cluster, so that the unit tests can check every option without an API server. The
 * backend itself (kube.c) is reached through spawn__kube_backend in spawn/backend.h.
 *
 * Labels on everything the backend creates (the shared pod watch selects on the first and
 * the last two):
 *   app=codehub-workspace, codehub.io/user=<user slug>, codehub.io/hub=<kube.hub_name>
 * Annotations: codehub.io/username=<the exact user name>, codehub.io/profile=<profile>. */
#ifndef CODEHUB_SPAWN_KUBE_H
#define CODEHUB_SPAWN_KUBE_H

#include "core/config.h"

#include <jansson.h>
#include <stdbool.h>

#define KUBE_APP_LABEL "app"
#define KUBE_APP_VALUE "codehub-workspace"
#define KUBE_USER_LABEL "codehub.io/user"
#define KUBE_HUB_LABEL "codehub.io/hub"
#define KUBE_USERNAME_ANNOTATION "codehub.io/username"
#define KUBE_PROFILE_ANNOTATION "codehub.io/profile"
#define KUBE_CONTAINER "workspace"
#define KUBE_HOME_VOLUME "home"

/* Expands a name template (kube.pod_name, kube.pvc_name: exactly one "{user}") for `user`
 * into a DNS-1123 label of at most 63 characters. The user name is used as is when it is
 * already safe there; otherwise (a '.', '_', a trailing '-', too long, or a name that ends
 * like a hash suffix) it is replaced by its safe characters plus "-" and 8 hex digits of a
 * hash of the exact name, so different users never share a name.
 * Returns the name; caller frees. */
char *spawn__kube_name(const char *tmpl, const char *user);

/* The codehub.io/user label value for `user` (spawn__kube_name with "{user}").
 * Caller frees. */
char *spawn__kube_user_label(const char *user);

/* "app=codehub-workspace,codehub.io/hub=HUB": the shared pod watch's label selector.
 * Caller frees. */
char *spawn__kube_selector(const struct config *cfg);

/* Whether `profile` is defined in kube.profiles. NULL or "" (the default settings) is
 * always valid. */
bool spawn__kube_profile_exists(const struct config *cfg, const char *profile);

/* The profiles for a page or the API: [{"name", "display_name", "description"}], in the
 * order of the config. New reference; caller decrefs. */
json_t *spawn__kube_profiles_list(const struct config *cfg);

/* The pod for `user` with `profile` (NULL or "": none): every kube.* setting, with the
 * profile's values replacing the configured ones key by key. `pvc_name` names the claim
 * mounted at kube.home_mount_path.
 * Returns a new reference (caller decrefs), or NULL with *err set (caller frees) for an
 * unknown profile or config JSON that does not parse. */
json_t *spawn__kube_pod_manifest(const struct config *cfg, const char *user, const char *profile,
                                 char **err);

/* The volume claim for `user` (kube.pvc_name, storage_*, labels and annotations).
 * Returns a new reference; caller decrefs. */
json_t *spawn__kube_pvc_manifest(const struct config *cfg, const char *user);

/* For `codehub user del NAME --purge-data` with the kubernetes spawner: deletes NAME's
 * pod (if any, with its grace period) and volume claim, waiting on a private loop for the
 * API server's answers (this is an offline command; the hub's own loop is not involved).
 * Returns 0 when the claim was deleted, -ENOENT when there was none, or another negative
 * errno with *err set (caller frees): the cluster cannot be reached, RBAC refuses. */
int spawn_kube_purge(const struct config *cfg, const char *user, char **err);

#endif
