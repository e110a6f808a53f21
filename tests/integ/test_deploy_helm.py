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
  end — the chart's Role is enough, and nothing more is granted;
- per-user origins (hub.userSubdomains.domain → proxy.user_subdomains): the config, the
  Ingress's *.DOMAIN rule and its certificate, the refusals (the chart and the binary agree
  on which domains are valid), off by default changing nothing, and the hub run with the
  chart's configuration sending NAME.DOMAIN requests to its handoff."""

import base64
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
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
    assert cfg["proxy"] == {"admin_access": False}  # workspaces under /user/NAME/

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
    assert ing["spec"]["tls"] == [
        {"hosts": ["code.example.org"], "secretName": "codehub-tls"},
        {"hosts": ["*.ws.example.org"], "secretName": "ws-example-org-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert [r["host"] for r in ing["spec"]["rules"]] == ["code.example.org", "*.ws.example.org"]
    assert cfg["proxy"] == {"admin_access": True, "user_subdomains": "ws.example.org"}

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


# -- per-user origins (hub.userSubdomains) -------------------------------------------------

INGRESS = ["--set", "ingress.enabled=true", "--set", "ingress.host=code.example.org"]
# --set-string: a domain such as 123 must reach the chart as the string it is.
SUBDOMAINS = [*INGRESS, "--set-string", "hub.userSubdomains.domain=ws.example.org"]


def without_secret_value(objs):
    """The objects with the hub secret's value blanked: `helm template` makes a new one
    each time."""
    objs = json.loads(json.dumps(objs))
    for o in objs:
        if o["kind"] == "Secret":
            o["data"] = None
    return objs


def test_user_subdomains_off_by_default_changes_nothing(helm_home):
    objs = render(helm_home, *INGRESS)
    assert hub_config(objs)["proxy"] == {"admin_access": False}
    assert "user_subdomains" not in one(objs, "ConfigMap")["data"]["codehub.yaml"]
    ing = one(objs, "Ingress")
    assert [r["host"] for r in ing["spec"]["rules"]] == ["code.example.org"]
    assert ing["spec"]["tls"] == [{"hosts": ["code.example.org"], "secretName": "codehub-tls"}]
    # The companion values act only with a domain: with it empty the render is the same,
    # down to the Deployment's config checksum (an upgrade rolls nothing).
    same = render(helm_home, *INGRESS, "--set-string", "hub.userSubdomains.domain=",
                  "--set", "ingress.tls.wildcardSecretName=other-tls",
                  "--set", "hub.userSubdomains.allowInsecureHTTP=true")
    assert without_secret_value(same) == without_secret_value(objs)


def test_user_subdomains_render(helm_home, tmp_path):
    off = render(helm_home, *INGRESS)
    objs = render(helm_home, *SUBDOMAINS)
    check_config(tmp_path, objs, "subdomains")  # the binary accepts what the chart made
    cfg = hub_config(objs)
    assert cfg["proxy"] == {"admin_access": False, "user_subdomains": "ws.example.org"}
    assert cfg["server"]["public_url"] == "https://code.example.org"

    # A second rule: every NAME.ws.example.org to the same Service and port, all paths;
    # its own certificate, SECRETNAME-wildcard by default.
    ing = one(objs, "Ingress")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    rules = ing["spec"]["rules"]
    assert [r["host"] for r in rules] == ["code.example.org", "*.ws.example.org"]
    assert rules[1]["http"] == rules[0]["http"] == {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "t-codehub", "port": {"name": "http"}}}}]}
    assert ing["spec"]["tls"] == [
        {"hosts": ["code.example.org"], "secretName": "codehub-tls"},
        {"hosts": ["*.ws.example.org"], "secretName": "codehub-tls-wildcard"}]

    # Nothing else changes but the configuration, and so the hub's config checksum (turning
    # it on rolls the hub).
    def rest(objs):
        return [o for o in without_secret_value(objs)
                if o["kind"] not in ("ConfigMap", "Ingress", "Deployment")]
    assert rest(objs) == rest(off)
    checksum = "checksum/config"
    dep_on, dep_off = one(objs, "Deployment"), one(off, "Deployment")
    assert dep_on["spec"]["template"]["metadata"]["annotations"][checksum] != \
        dep_off["spec"]["template"]["metadata"]["annotations"][checksum]
    del dep_on["spec"]["template"]["metadata"]["annotations"][checksum]
    del dep_off["spec"]["template"]["metadata"]["annotations"][checksum]
    assert dep_on == dep_off

    # A certificate of its own name; or one certificate for both names, listed once.
    tls = one(render(helm_home, *SUBDOMAINS, "--set", "ingress.tls.wildcardSecretName=ws-tls"),
              "Ingress")["spec"]["tls"]
    assert tls[1] == {"hosts": ["*.ws.example.org"], "secretName": "ws-tls"}
    tls = one(render(helm_home, *SUBDOMAINS,
                     "--set", "ingress.tls.wildcardSecretName=codehub-tls"),
              "Ingress")["spec"]["tls"]
    assert tls == [{"hosts": ["code.example.org", "*.ws.example.org"],
                    "secretName": "codehub-tls"}]

    # The hub's own host as DOMAIN (NAME.code.example.org), behind a TLS proxy of the
    # operator's (no Ingress) on another port: the workspaces share the port.
    objs = render(helm_home, "--set", "hub.publicURL=https://code.example.org:8443",
                  "--set-string", "hub.userSubdomains.domain=code.example.org")
    assert not [o for o in objs if o["kind"] == "Ingress"]
    check_config(tmp_path, objs, "own-host")
    assert hub_config(objs)["proxy"]["user_subdomains"] == "code.example.org"

    # Plain HTTP only when asked for by name; the Ingress then has no TLS.
    objs = render(helm_home, *SUBDOMAINS, "--set", "ingress.tls.enabled=false",
                  "--set", "hub.userSubdomains.allowInsecureHTTP=true")
    check_config(tmp_path, objs, "http")
    cfg = hub_config(objs)
    assert cfg["server"]["public_url"] == "http://code.example.org"
    assert cfg["proxy"]["user_subdomains"] == "ws.example.org"
    assert "tls" not in one(objs, "Ingress")["spec"]


def test_user_subdomains_example_in_deploy_md_renders(helm_home, tmp_path):
    """The values snippet docs/deploy.md shows is what the chart takes."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    start = text.index("# values-subdomains.yaml\n")
    values = tmp_path / "values-subdomains.yaml"
    values.write_text(text[start:text.index("```", start)])
    objs = render(helm_home, "-f", str(values))
    check_config(tmp_path, objs, "deploy-md")
    assert hub_config(objs)["proxy"]["user_subdomains"] == "ws.example.org"
    assert one(objs, "Ingress")["spec"]["tls"] == [
        {"hosts": ["code.example.org"], "secretName": "code-example-org-tls"},
        {"hosts": ["*.ws.example.org"], "secretName": "ws-example-org-tls"}]


LONGEST = ("b" * 63 + ".") * 3 + "c" * 28  # 220 characters


@pytest.mark.parametrize("args,message", [
    # The domain: the schema's checks, then the chart's, each naming the value.
    (["--set-string", "hub.userSubdomains.domain=Ws.example.org"],
     'hub.userSubdomains.domain "Ws.example.org" must be lowercase'),
    (["--set-string", "hub.userSubdomains.domain=10.0.0.1"], "not an IP address"),
    (["--set-string", "hub.userSubdomains.domain=ws.example.org."], "must not end with a dot"),
    (["--set-string", "hub.userSubdomains.domain=ws..example.org"],
     "'/hub/userSubdomains/domain': 'ws..example.org' is not valid hostname"),
    (["--set-string", "hub.userSubdomains.domain=ws_1.example.org"], "invalid character '_'"),
    (["--set-string", "hub.userSubdomains.domain=ws.example.org:8443"], "invalid character ':'"),
    (["--set-string", "hub.userSubdomains.domain=*.example.org"], "invalid character '*'"),
    (["--set-string", f"hub.userSubdomains.domain={LONGEST}c"],
     "'/hub/userSubdomains/domain': maxLength: got 221, want 220"),
    (["--set", "hub.userSubdomains.domian=ws.example.org"], "additional properties 'domian'"),
    (["--set", "ingress.tls.wildcardSecretName=Ws_TLS"], "/ingress/tls/wildcardSecretName"),
    # The public URL: needed, https unless the operator opts out, and not itself NAME.DOMAIN.
    (["--set", "ingress.enabled=false"], "needs the hub's public URL"),
    (["--set", "ingress.tls.enabled=false"],
     'needs an https public URL, not "http://code.example.org"'),
    (["--set", "hub.publicURL=http://code.example.org"], "hub.userSubdomains.allowInsecureHTTP"),
    (["--set", "hub.extraConfig.server.public_url=http://hub.example.org"],
     "a page in one user's workspace can set cookies"),
    (["--set-string", "hub.userSubdomains.domain=example.org"],
     "codehub would serve it as user \"code\"'s workspace"),
    # Set elsewhere, the Ingress would not serve *.DOMAIN.
    (["--set-string", "hub.userSubdomains.domain=",
      "--set", "hub.extraConfig.proxy.user_subdomains=ws.example.org"],
     "with hub.userSubdomains.domain, not hub.extraConfig.proxy.user_subdomains"),
])
def test_bad_user_subdomains_are_refused_with_the_reason(helm_home, args, message):
    r = helm(helm_home, "template", "t", str(CHART), "--namespace", "codehub",
             "--kube-version", KUBE_VERSION, *SUBDOMAINS, *args, check=False)
    assert r.returncode != 0, r.stdout[:2000]
    assert message in r.stderr, r.stderr


def test_chart_and_hub_agree_on_the_domain(helm_home, tmp_path):
    """Every domain the chart renders, `codehub check-config` accepts, and every one the
    binary would refuse at start the chart refuses, naming the value."""
    ok = ["ws.example.org", "localhost", "code.example.org", "x--y.example", "1a.example",
          "a" * 63 + ".org", LONGEST]
    bad = ["Ws.example.org", "WS.EXAMPLE.ORG", "10.0.0.1", "1.2.3", "123", "ws.example.org.",
           ".example.org", "a..b", "-ws.example.org", "ws-.example.org", "ws_1.example.org",
           "a" * 64 + ".org", LONGEST + "c", "ws.example.org:8443", "*.example.org",
           "ws example.org", "[::1]", "::1", "ŵs.example.org", "ws.example.org/x", "ws.1",
           "a.0x7f", "a.0x"]
    disagree = []
    for domain in ok + bad:
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump({"hub": {
            "publicURL": "https://hub.internal.test", "userSubdomains": {"domain": domain}}}))
        r = helm(helm_home, "template", "t", str(CHART), "--kube-version", KUBE_VERSION,
                 "-f", str(values), check=False)
        chart_ok = r.returncode == 0
        if not chart_ok:
            assert "hub.userSubdomains.domain" in r.stderr or \
                "/hub/userSubdomains/domain" in r.stderr, (domain, r.stderr)
        config = tmp_path / "codehub.yaml"
        config.write_text(yaml.safe_dump({"server": {"public_url": "https://hub.internal.test"},
                                          "proxy": {"user_subdomains": domain}}))
        hub = subprocess.run([BIN, "check-config", str(config)], capture_output=True, text=True)
        hub_ok = hub.returncode == 0
        if chart_ok != hub_ok or chart_ok != (domain in ok):
            disagree.append((domain, chart_ok, hub_ok, r.stderr.strip()[-300:],
                             (hub.stdout + hub.stderr).strip()[-300:]))
    assert not disagree, disagree


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


def hub_in_cluster(helm_home, kube, make_hub, ns, release, *args):
    """codehub as a pod of the chart's Deployment runs it: the chart's ServiceAccount,
    Role, RoleBinding, ConfigMap and Secret created in NS, and the files such a pod sees —
    its ServiceAccount's token, the cluster CA and the namespace; the ConfigMap's
    configuration; the Secret's value. Returns the hub and the token's directory."""
    if kube.get("serviceaccounts", "default", ns=ns) is None:
        make_namespace(kube, ns)
    objs = render(helm_home, *args, release=release, ns=ns)
    apply(kube, [o for o in objs if o["kind"] in ("ServiceAccount", "Role", "RoleBinding",
                                                   "ConfigMap", "Secret")], ns)
    sa_dir = Path(tempfile.mkdtemp(prefix="chsa-", dir="/tmp"))
    (sa_dir / "token").write_text(mint_token(kube, ns, f"{release}-codehub"))
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
    return hub, sa_dir


def test_codehub_in_cluster_with_the_charts_rbac_spawns_a_user(helm_home, kube, make_hub,
                                                              store_backend):
    ns = f"chart-run-{store_backend[:2]}"
    hub, sa_dir = hub_in_cluster(helm_home, kube, make_hub, ns, "run",
                                 "--set", "singleuser.storage.capacity=1Gi",
                                 "--set", "singleuser.startTimeout=90s")
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


def test_user_subdomains_notes_and_apiserver(helm_home, kube):
    """The install's NOTES say what DNS and certificates to provide; the apiserver takes
    the Ingress with its wildcard rule in both TLS layouts (strict field validation)."""
    ns = "chart-sub"
    make_namespace(kube, ns)
    r = helm(helm_home, "install", "sub", str(CHART), "--namespace", ns, "--dry-run=server",
             *SUBDOMAINS, kubeconfig=kube.admin_kubeconfig)
    notes = r.stdout.split("NOTES:", 1)[1]
    assert "https://NAME.ws.example.org/" in notes
    assert "a wildcard record *.ws.example.org pointing where code.example.org points" in notes
    assert "Secret codehub-tls-wildcard in chart-sub with a certificate for *.ws.example.org" \
        in notes
    assert "DNS-01" in notes and "Host header" in notes and "WebSocket" in notes
    assert "WARNING" not in notes
    # A name that cannot be a DNS label is called out.
    r = helm(helm_home, "install", "sub", str(CHART), "--namespace", ns, "--dry-run=server",
             *SUBDOMAINS, "--set", "auth.adminUsers={j.doe,ann}",
             "--set", "ingress.tls.wildcardSecretName=codehub-tls",
             kubeconfig=kube.admin_kubeconfig)
    notes = r.stdout.split("NOTES:", 1)[1]
    assert "WARNING: these user names are not DNS labels" in notes
    assert "NAME.ws.example.org: j.doe." in notes
    assert "one certificate for both code.example.org\n    and *.ws.example.org" in notes

    for extra in ([], ["--set", "ingress.tls.wildcardSecretName=codehub-tls"]):
        objs = render(helm_home, *SUBDOMAINS, *extra, ns=ns)
        apply(kube, [one(objs, "Ingress")], ns, dry_run=True)


def test_codehub_in_cluster_serves_user_subdomains_as_the_ingress_sends_them(
        helm_home, kube, make_hub, store_backend):
    """The hub run with the chart's configuration, reached as the Ingress reaches it (the
    Host passed through): NAME.ws.example.org is NAME's workspace origin and starts the
    handoff on the hub's public URL; /user/NAME/ on the hub's host sends the browser there;
    the hub's own host is still the hub."""
    hub, _ = hub_in_cluster(helm_home, kube, make_hub, f"chart-sub-{store_backend[:2]}", "sub",
                            *SUBDOMAINS)

    def get(host, path):
        return requests.get(hub.url + path, headers={"Host": host, "Accept": "text/html"},
                            allow_redirects=False, timeout=10)

    r = get("ann.ws.example.org", "/some/file?x=1")
    assert r.status_code == 302, (r.status_code, r.text)
    loc = urlsplit(r.headers["Location"])
    assert (loc.scheme, loc.netloc, loc.path) == ("https", "code.example.org", "/hub/handoff")
    q = parse_qs(loc.query)
    assert q["workspace"] == ["ann"] and q["next"] == ["/some/file?x=1"], q
    # The browser-binding cookie is a __Host- cookie: the chart's public URL is https.
    assert re.search(r"(^|, )__Host-codehub-ws-state-[0-9a-f]{16}=", r.headers["Set-Cookie"]), \
        r.headers["Set-Cookie"]

    r = get("code.example.org", "/user/ann/some/file")
    assert r.status_code == 302, (r.status_code, r.text)
    assert r.headers["Location"] == "https://ann.ws.example.org/some/file"

    r = get("code.example.org", "/hub/login")
    assert r.status_code == 200 and "password" in r.text, (r.status_code, r.text[:300])
