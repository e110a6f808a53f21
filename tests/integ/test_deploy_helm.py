"""The Helm chart (deploy/helm/codehub) with the real Helm (scripts/install-helm.sh) and
the test apiserver (tests/kube: a real kube-apiserver with RBAC and admission):

- `helm lint --strict` and `helm template` with the default values and with every option
  on (ci/all-options-values.yaml); the schema and the chart refuse bad combinations;
- the rendered configuration is valid for the real binary (`codehub check-config`);
- every rendered object is created by the apiserver (strict field validation, admission);
- `helm install`, `upgrade` and `uninstall` against it: the hub secret is made once and
  kept across upgrades, and uninstall keeps the store's claim, the secret and users' claims;
- codehub "in cluster": the token of the chart's own hub ServiceAccount laid out as a pod
  sees it, the chart's ConfigMap as its configuration, a user logged in and spawned end to
  end — the chart's Role is enough, and nothing more is granted."""

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT
from kube_util import KubeError, kube  # noqa: F401  (the session fixture)
from workspace_util import progress_events, vscode_page
from workspace_util import wait_state

CHART = ROOT / "deploy" / "helm" / "codehub"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
HELM = ROOT / ".deps" / "helm" / "bin" / "helm"
# The apiserver's version: the chart is rendered for it.
KUBE_VERSION = "1.36.3"

# Where each kind the chart renders lives in the API.
RESOURCES = {
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "PersistentVolumeClaim"): "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("apps/v1", "DaemonSet"): "/apis/apps/v1/namespaces/{ns}/daemonsets",
    ("rbac.authorization.k8s.io/v1", "Role"):
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"):
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    ("networking.k8s.io/v1", "NetworkPolicy"):
        "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    ("networking.k8s.io/v1", "Ingress"): "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses",
    ("policy/v1", "PodDisruptionBudget"):
        "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
}

HUB_RULES = [
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory):
    """Helm, installed if missing, with its cache and config in a scratch directory."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path_factory.mktemp("helm")


def helm(helm_home, *args, kubeconfig=None, check=True):
    home = Path(helm_home)
    env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"),
               HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    r = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def render(helm_home, *args, release="t", ns="codehub"):
    """`helm template` → the list of rendered objects."""
    r = helm(helm_home, "template", release, str(CHART), "--namespace", ns,
             "--kube-version", KUBE_VERSION, *args)
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in objs
                                         if o["kind"] == kind])
    return found[0]


def hub_config(objs):
    return yaml.safe_load(one(objs, "ConfigMap")["data"]["codehub.yaml"])


def check_config(tmp_path, objs, name):
    """The rendered configuration, run through the real binary's validator."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(one(objs, "ConfigMap")["data"]["codehub.yaml"])
    r = subprocess.run([BIN, "check-config", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- lint and template ---------------------------------------------------------------------

def test_lint_strict_default_and_every_option(helm_home):
    for extra in ([], ["-f", str(ALL_OPTIONS)]):
        r = helm(helm_home, "lint", "--strict", str(CHART), *extra)
        assert "0 chart(s) failed" in r.stdout, r.stdout


def test_default_render(helm_home, tmp_path):
    objs = render(helm_home)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["NetworkPolicy", "NetworkPolicy", "PodDisruptionBudget",
                            "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim",
                            "Role", "RoleBinding", "Service", "DaemonSet", "Deployment"])
    check_config(tmp_path, objs, "default")
    cfg = hub_config(objs)
    assert cfg["spawn"]["spawner"] == "kubernetes"
    assert cfg["kube"]["image"] == "codehub/workspace:0.1.0"
    assert cfg["kube"]["hub_name"] == "t-codehub"
    assert cfg["auth"]["secret_file"] == "/etc/codehub/secret/hub-secret"
    assert "url" not in cfg.get("store", {})  # SQLite in the data dir

    # The hub's Role: exactly the spawner's verbs, nothing cluster-wide.
    role = one(objs, "Role")
    assert role["rules"] == HUB_RULES
    binding = one(objs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "t-codehub",
                                    "namespace": "codehub"}]
    assert not [o for o in objs if o["kind"].startswith("Cluster")]

    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "t-codehub"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/hub/health", probe
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["args"] == ["serve", "--config", "/etc/codehub/config/codehub.yaml"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["t-codehub-data"]
    assert one(objs, "PersistentVolumeClaim")["metadata"]["annotations"] == \
        {"helm.sh/resource-policy": "keep"}

    secret = one(objs, "Secret")
    value = base64.b64decode(secret["data"]["hub-secret"]).decode()
    assert len(value) == 64 and value.isalnum()
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # Workspaces: reachable from the hub's pods only, on code-server's port.
    ws = one(objs, "NetworkPolicy", "t-codehub-workspaces")
    assert ws["spec"]["podSelector"]["matchLabels"] == {"app": "codehub-workspace",
                                                        "codehub.io/hub": "t-codehub"}
    (rule,) = ws["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "codehub", "app.kubernetes.io/instance": "t",
        "app.kubernetes.io/component": "hub"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    # The hub selector matches the Deployment's pods.
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in rule["from"][0]["podSelector"]["matchLabels"].items())

    hubnp = one(objs, "NetworkPolicy", "t-codehub-hub")
    ports = [[p["port"] for p in e["ports"]] for e in hubnp["spec"]["egress"]]
    assert ports == [[53, 53], [443, 6443], [8080]]  # DNS, API server, workspaces

    ds = one(objs, "DaemonSet")
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
    assert images == ["codehub/workspace:0.1.0"]


def test_every_option_render(helm_home, tmp_path):
    objs = render(helm_home, "-f", str(ALL_OPTIONS))
    check_config(tmp_path, objs, "all")
    cfg = hub_config(objs)
    assert cfg["http"]["max_connections"] == 20000  # extraConfig merged
    assert cfg["spawn"] == {"spawner": "kubernetes", "start_timeout": "10m",
                            "concurrent_limit": 20}
    assert cfg["auth"]["admin_users"] == ["admin"]
    assert cfg["auth"]["open_signup"] is False
    assert cfg["store"] == {"pool_size": 16, "password_file": "/etc/codehub/db/password"}
    assert cfg["server"]["public_url"] == "https://code.example.org"
    kube_cfg = cfg["kube"]
    assert {"name": "docker-socket", "mountPath": "/var/run/docker.sock"} in \
        kube_cfg["volume_mounts"]
    assert kube_cfg["service_account"] == "codehub-all-workspace"
    assert kube_cfg["automount_service_account_token"] is True
    assert sorted(kube_cfg["profiles"]) == ["gpu", "large"]
    assert sorted(kube_cfg["env"]) == ["EDITOR=nano", "PIP_INDEX_URL=https://pypi.example/simple"]

    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["CODEHUB_STORE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "codehub-db",
                                                                     "key": "url"}
    assert "postgres" not in json.dumps(one(objs, "ConfigMap"))  # no URL in the ConfigMap
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["data"] == {"name": "data", "emptyDir": {}}
    assert vols["db-password"]["secret"]["secretName"] == "codehub-db"
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]

    ing = one(objs, "Ingress")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    assert ing["spec"]["tls"] == [{"hosts": ["code.example.org"], "secretName": "codehub-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["host"] == "code.example.org"

    # The workspace account's rights live in the deploy namespace, never the hub's.
    wrole = one(objs, "Role", "codehub-all-workspace")
    assert wrole["metadata"]["namespace"] == "codehub-dev"
    assert one(objs, "RoleBinding", "codehub-all-workspace")["subjects"] == [
        {"kind": "ServiceAccount", "name": "codehub-all-workspace", "namespace": "codehub"}]
    assert one(objs, "Role", "codehub-all-hub")["rules"] == HUB_RULES

    hubnp = one(objs, "NetworkPolicy", "codehub-all-hub")
    egress = hubnp["spec"]["egress"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in egress[2]["to"]  # the database
    assert egress[2]["ports"] == [{"protocol": "TCP", "port": 5432}]

    ds = one(objs, "DaemonSet")
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
    assert images == ["codehub/workspace:0.1.0", "codehub/workspace-ds:0.1.0"]
    assert ds["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "workspaces", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize("args,message", [
    (["--set", "hub.replicas=2"], "/hub/replicas"),
    (["--set", "store.type=postgres"], "store.postgres.urlSecret.name"),
    (["--set", "store.type=mysql"], "/store/type"),
    (["--set", "singleuser.image.pullPolicy=Sometimes"], "/singleuser/image/pullPolicy"),
    (["--set", "singleuser.serviceAccount.create=true"], "deployNamespace"),
    (["--set", "singleuser.serviceAccount.create=true",
      "--set", "singleuser.serviceAccount.deployNamespace=codehub"], "must not be the hub's"),
    (["--set", "ingress.enabled=true", "--set", "ingress.host="], "ingress.host"),
    (["--set", "hub.publicURL=ftp://x"], "/hub/publicURL"),
    (["--set", "singleuser.storage.capacity=lots"], "/singleuser/storage/capacity"),
    (["--set", "cull.timeout=an hour"], "/cull/timeout"),
    (["--set", "singleuser.profiles.Big.image=x"], "invalid propertyName 'Big'"),
    (["--set", "hub.replica=2"], "additional properties 'replica'"),
])
def test_bad_values_are_refused_with_the_reason(helm_home, args, message):
    r = helm(helm_home, "template", "t", str(CHART), "--namespace", "codehub",
             "--kube-version", KUBE_VERSION, *args, check=False)
    assert r.returncode != 0, r.stdout[:2000]
    assert message in r.stderr, r.stderr


def test_replicas_with_postgres_and_existing_secret(helm_home):
    objs = render(helm_home, "--set", "store.type=postgres",
                  "--set", "store.postgres.urlSecret.name=db", "--set", "hub.replicas=2",
                  "--set", "hub.existingSecret=mine")
    assert one(objs, "Deployment")["spec"]["replicas"] == 2
    assert not [o for o in objs if o["kind"] == "Secret"]
    vols = one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "hub-secret", "secret": {"secretName": "mine", "defaultMode": 0o440,
            "items": [{"key": "hub-secret", "path": "hub-secret"}]}} in vols


# -- against the apiserver -----------------------------------------------------------------

def make_namespace(kube, name):
    kube.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name}})
    # No controller manager runs: the ServiceAccount admission plugin wants `default`.
    kube.admin.post(f"/api/v1/namespaces/{name}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "default"}})


def apply(kube, objs, ns, dry_run=False):
    """Creates each object as a client would, with strict field validation: an unknown or
    misspelt field is an error, not silently dropped."""
    query = {"fieldValidation": "Strict"}
    if dry_run:
        query["dryRun"] = "All"
    for o in objs:
        path = RESOURCES[(o["apiVersion"], o["kind"])].format(
            ns=o["metadata"].get("namespace", ns))
        try:
            kube.admin.post(path, o, query=query)
        except KubeError as e:
            raise AssertionError(f"{o['kind']} {o['metadata']['name']}: {e}") from None


def test_every_option_is_accepted_by_the_apiserver(helm_home, kube):
    make_namespace(kube, "chart-all")
    make_namespace(kube, "codehub-dev")
    objs = render(helm_home, "-f", str(ALL_OPTIONS), ns="chart-all")
    apply(kube, objs, "chart-all")
    dep = kube.admin.get("/apis/apps/v1/namespaces/chart-all/deployments/codehub-all")
    assert dep["spec"]["replicas"] == 3
    role = kube.admin.get("/apis/rbac.authorization.k8s.io/v1/namespaces/codehub-dev/roles/"
                          "codehub-all-workspace")
    assert role["rules"][0]["verbs"][0] == "get"
    # And a field the API does not know is refused, so the check above means something.
    bad = json.loads(json.dumps(one(objs, "Service")))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["portz"] = 1
    with pytest.raises(AssertionError, match="portz"):
        apply(kube, [bad], "chart-all", dry_run=True)


def release_secret(kube, ns, name):
    return kube.admin.get(f"/api/v1/namespaces/{ns}/secrets/{name}")["data"]["hub-secret"]


def test_install_upgrade_uninstall_keeps_secret_and_data(helm_home, kube):
    ns = "chart-life"
    make_namespace(kube, ns)
    kc = kube.admin_kubeconfig
    r = helm(helm_home, "install", "life", str(CHART), "--namespace", ns, kubeconfig=kc)
    assert "first use" in r.stdout  # NOTES.txt
    first = release_secret(kube, ns, "life-codehub-secret")

    helm(helm_home, "upgrade", "life", str(CHART), "--namespace", ns,
         "--set", "auth.adminUsers={root}", kubeconfig=kc)
    assert release_secret(kube, ns, "life-codehub-secret") == first
    cm = kube.admin.get(f"/api/v1/namespaces/{ns}/configmaps/life-codehub-config")
    assert yaml.safe_load(cm["data"]["codehub.yaml"])["auth"]["admin_users"] == ["root"]

    # A user's claim, as the spawner makes it: not the chart's, so never Helm's to delete.
    kube.admin.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "claim-ann", "labels": {"app": "codehub-workspace",
                                                     "codehub.io/hub": "life-codehub"}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})

    helm(helm_home, "uninstall", "life", "--namespace", ns, kubeconfig=kc)
    assert kube.get("configmaps", "life-codehub-config", ns=ns) is None
    assert kube.get("serviceaccounts", "life-codehub", ns=ns) is None
    assert release_secret(kube, ns, "life-codehub-secret") == first
    assert kube.get("persistentvolumeclaims", "life-codehub-data", ns=ns) is not None
    assert kube.get("persistentvolumeclaims", "claim-ann", ns=ns) is not None

    # A reinstall finds the kept secret and store.
    helm(helm_home, "install", "life", str(CHART), "--namespace", ns, kubeconfig=kc)
    assert release_secret(kube, ns, "life-codehub-secret") == first
    helm(helm_home, "uninstall", "life", "--namespace", ns, kubeconfig=kc)


def mint_token(kube, ns, sa):
    out = kube.admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}})
    return out["status"]["token"]


def test_codehub_in_cluster_with_the_charts_rbac_spawns_a_user(helm_home, kube, make_hub,
                                                              store_backend):
    ns = f"chart-run-{store_backend[:2]}"
    if kube.get("serviceaccounts", "default", ns=ns) is None:
        make_namespace(kube, ns)
    objs = render(helm_home, "--set", "singleuser.storage.capacity=1Gi",
                  "--set", "singleuser.startTimeout=90s", release="run", ns=ns)
    apply(kube, [o for o in objs if o["kind"] in ("ServiceAccount", "Role", "RoleBinding",
                                                   "ConfigMap", "Secret")], ns)

    # The files a pod of the chart's Deployment sees: its ServiceAccount's token, the
    # cluster CA and the namespace; the ConfigMap's configuration; the Secret's value.
    sa_dir = Path(tempfile.mkdtemp(prefix="chsa-", dir="/tmp"))
    (sa_dir / "token").write_text(mint_token(kube, ns, "run-codehub"))
    (sa_dir / "ca.crt").write_bytes(Path(kube.ca_path).read_bytes())
    (sa_dir / "namespace").write_text(ns)
    secret_file = sa_dir / "hub-secret"
    secret_file.write_bytes(base64.b64decode(one(objs, "Secret")["data"]["hub-secret"]))
    secret_file.chmod(0o440)
    config = one(objs, "ConfigMap")["data"]["codehub.yaml"]
    hub = make_hub(config, env={
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kube.port),
        "CODEHUB_K8S_SERVICEACCOUNT_DIR": str(sa_dir),
        "CODEHUB_AUTH_SECRET_FILE": str(secret_file),
        "CODEHUB_KUBE_KUBECONFIG": "",
        "CODEHUB_LOG_FORMAT": "text",
    })
    # The chart's account may do what the spawner needs, and no more.
    hubclient = type(kube.admin)("127.0.0.1", kube.port, kube.ca_path,
                                 (sa_dir / "token").read_text())
    assert hubclient.status_of("GET", f"/api/v1/namespaces/{ns}/pods") == 200
    assert hubclient.status_of("GET", f"/api/v1/namespaces/{ns}/secrets") == 403
    assert hubclient.status_of("GET", f"/api/v1/namespaces/{kube.namespace}/pods") == 403

    name = "helmuser"
    s, _ = hub.login(name, name + "-pass1")
    try:
        r = hub.api(s, "POST", f"/users/{name}/server")
        assert r.status_code in (201, 202), (r.status_code, r.text)
        events = progress_events(hub, s, name)
        assert events[-1]["ready"], (events[-3:], hub.log()[-3000:])
        wait_state(hub, s, name, "running")
        pod = kube.pod(f"codehub-{name}", ns=ns)
        assert pod["metadata"]["labels"]["codehub.io/hub"] == "run-codehub"
        (c,) = pod["spec"]["containers"]
        assert c["image"] == "codehub/workspace:0.1.0"
        assert pod["spec"]["securityContext"]["fsGroup"] == 1000
        page = vscode_page(hub, s, name)
        assert page.status_code == 200 and "vscode" in page.text.lower(), page.text[:300]
        r = hub.api(s, "DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        wait_state(hub, s, name, "stopped")
        kube.wait_gone("pods", f"codehub-{name}", ns=ns)
        assert kube.get("persistentvolumeclaims", f"claim-{name}", ns=ns) is not None
    finally:
        kube.delete("pods", f"codehub-{name}", ns=ns, grace=0)
        kube.delete("persistentvolumeclaims", f"claim-{name}", ns=ns)
        kube.wait_gone("pods", f"codehub-{name}", ns=ns)
        kube.wait_gone("persistentvolumeclaims", f"claim-{name}", ns=ns)
