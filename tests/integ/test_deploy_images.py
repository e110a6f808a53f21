"""The container images (deploy/images/{hub,workspace}/Dockerfile) checked against the
repository and this machine, without a container engine (none runs here): every base image
and Debian package pinned, the pinned Debian versions present in bookworm, one apt layer per
runtime stage, the hub's runtime packages covering every shared library the built codehub
loads, the build stage covering every library CMakeLists.txt looks for, the Go tool modules
complete and consistent offline, the code-server lockfiles pinned by sha512 at the version
scripts/install-code-server.sh uses, the workspace's environment agreeing with its
entrypoint, every COPY source present and let through by .dockerignore, and the images
agreeing with the Helm chart. Only local commands run (apt-cache, dpkg, ldd, go with
GOPROXY=off); nothing touches the network."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
HUB_DOCKERFILE = IMAGES / "hub" / "Dockerfile"
WS_DOCKERFILE = IMAGES / "workspace" / "Dockerfile"
TOOLS = IMAGES / "workspace" / "tools"
GO_TOOLS = ("docker", "kubectl", "k9s", "skaffold")
ENTRYPOINT = IMAGES / "workspace" / "entrypoint"
CHART = ROOT / "deploy" / "helm" / "codehub"


# ---- a small Dockerfile parser ----

class Instr:
    def __init__(self, cmd, args, line):
        self.cmd = cmd  # upper case: FROM, RUN, ...
        self.args = args  # the rest, continuation lines joined
        self.line = line  # where it starts (1-based)

    def json_args(self):
        """The exec form (["a", "b"]) as a list; None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            return json.loads(text)
        return None

    def flags_and_words(self):
        """COPY/ADD: (--flags dict, other words)."""
        flags, words = {}, []
        for w in shlex.split(self.args):
            if w.startswith("--") and not words:
                key, _, val = w[2:].partition("=")
                flags[key] = val
            else:
                words.append(w)
        return flags, words


class Stage:
    def __init__(self, image, name, line):
        self.image = image
        self.name = name
        self.line = line
        self.instrs = []
        self.args = {}  # ARGs declared in the stage (name -> default or None)

    def all(self, cmd):
        return [i for i in self.instrs if i.cmd == cmd]


class Dockerfile:
    def __init__(self, path):
        self.path = path
        self.global_args = {}
        self.stages = []
        self.instrs = parse_dockerfile(path.read_text())
        for ins in self.instrs:
            if ins.cmd == "FROM":
                words = ins.args.split()
                name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
                self.stages.append(Stage(words[0], name, ins.line))
            elif not self.stages:
                assert ins.cmd == "ARG", f"{path}:{ins.line}: only ARG may precede FROM"
                k, v = parse_arg(ins.args)
                self.global_args[k] = v
            else:
                self.stages[-1].instrs.append(ins)
                if ins.cmd == "ARG":
                    k, v = parse_arg(ins.args)
                    self.stages[-1].args[k] = v
        assert self.stages, f"{path}: no FROM"

    @property
    def final(self):
        return self.stages[-1]

    def stage(self, name):
        for s in self.stages:
            if s.name == name:
                return s
        raise AssertionError(f"{self.path}: no stage named {name}")

    def resolve_image(self, ref):
        """The image a FROM names, with ${ARG}s replaced by their global defaults."""
        def sub(m):
            key = m.group(1) or m.group(2)
            val = self.global_args.get(key)
            assert val, f"{self.path}: FROM uses ARG {key}, which has no default"
            return val
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, ref)


def parse_arg(text):
    k, sep, v = text.strip().partition("=")
    return k, (shlex.split(v)[0] if v.strip() else "") if sep else None


def parse_dockerfile(text):
    """Instructions with continuation lines joined. Comment lines are dropped, also inside a
    continued instruction (as Docker does); the escape character is the default '\\'."""
    instrs, cur, start = [], None, 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and cur is None):
            continue
        cont = stripped.endswith("\\")
        body = stripped[:-1].rstrip() if cont else stripped
        if cur is None:
            cur, start = body, n
        else:
            cur += " " + body
        if not cont:
            cmd, _, rest = cur.strip().partition(" ")
            instrs.append(Instr(cmd.upper(), rest.strip(), start))
            cur = None
    assert cur is None, "the last instruction ends with a line continuation"
    return instrs


def apt_installs(run_args):
    """The package words of every `apt-get install` in a RUN's shell text."""
    pkgs = []
    for cmd in re.split(r"&&|;|\|\|", run_args):
        words = shlex.split(cmd)
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            after = words[words.index("install") + 1:]
            pkgs += [w for w in after if not w.startswith("-")]
    return pkgs


def apt_runs(stage):
    return [i for i in stage.all("RUN") if "apt-get" in i.args]


def pinned_packages(stage):
    """{package: version} of every apt-get install in a stage."""
    out = {}
    for run in apt_runs(stage):
        for word in apt_installs(run.args):
            name, sep, ver = word.partition("=")
            assert sep and ver, f"stage {stage.name or stage.image}: apt package {word} " \
                "has no =VERSION pin"
            out[name] = ver
    return out


@pytest.fixture(scope="module")
def hub():
    return Dockerfile(HUB_DOCKERFILE)


@pytest.fixture(scope="module")
def ws():
    return Dockerfile(WS_DOCKERFILE)


@pytest.fixture(scope="module", params=["hub", "workspace"])
def dockerfile(request):
    return Dockerfile(HUB_DOCKERFILE if request.param == "hub" else WS_DOCKERFILE)


def test_parser_joins_continuations_and_drops_comments():
    instrs = parse_dockerfile("ARG A=1\n# c\nFROM x:${A} AS b\nRUN a \\\n  # inner\n"
                              "  && b\n\nCMD [\"x\"]\n")
    assert [(i.cmd, i.args, i.line) for i in instrs] == [
        ("ARG", "A=1", 1), ("FROM", "x:${A} AS b", 3), ("RUN", "a && b", 4),
        ("CMD", '["x"]', 8)]
    assert apt_installs("apt-get update && apt-get install -y --no-install-recommends "
                        "a=1 b=2:3 && rm -rf /x") == ["a=1", "b=2:3"]


# ---- base images, apt layers, users, entrypoints ----

def test_every_from_is_pinned(dockerfile):
    names = set()
    for st in dockerfile.stages:
        if st.image in names:
            continue  # a FROM of an earlier stage
        image = dockerfile.resolve_image(st.image)
        repo, _, digest = image.partition("@")
        assert ":" in repo.rsplit("/", 1)[-1], f"{image}: no tag"
        tag = repo.rsplit(":", 1)[1]
        assert tag != "latest", f"{image}: latest is not a pin"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
        if repo.startswith(("node:", "golang:")):
            # Toolchains by exact release; debian:bookworm-slim moves only with Debian's
            # point releases and is documented as the one to pin by digest.
            assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: not an exact release tag"
        if st.name:
            names.add(st.name)


def test_runtime_stage_has_one_clean_apt_layer(dockerfile):
    runs = apt_runs(dockerfile.final)
    assert len(runs) == 1, f"{dockerfile.path}: {len(runs)} RUNs use apt-get in the runtime stage"
    for st in dockerfile.stages:
        for run in apt_runs(st):
            text = run.args
            assert "apt-get update" in text and "--no-install-recommends" in text, run.line
            assert "rm -rf /var/lib/apt/lists/*" in text, run.line
            # The cleanup comes after the install, in the same layer.
            assert text.index("rm -rf /var/lib/apt/lists/*") > text.index("install"), run.line
            assert re.search(r"\sinstall\s+(?:\S+\s+)*?(?:-y|--yes)\s", text), run.line
        for run in st.all("RUN"):
            assert "apt-get upgrade" not in run.args and "dist-upgrade" not in run.args


def test_every_apt_package_is_pinned(dockerfile):
    found = 0
    for st in dockerfile.stages:
        found += len(pinned_packages(st))
    assert found > 0


def madison(packages):
    """{package: set of versions} that apt knows on this machine (Debian bookworm)."""
    apt_cache = shutil.which("apt-cache")
    if not apt_cache:
        pytest.skip("apt-cache is missing: cannot check the pinned Debian versions here")
    res = subprocess.run([apt_cache, "madison", *sorted(packages)], capture_output=True,
                         text=True, timeout=60)
    known = {}
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and "bookworm" in parts[2]:
            known.setdefault(parts[0], set()).add(parts[1])
    return known


def test_pinned_debian_versions_exist_in_bookworm(dockerfile):
    """Every pinned package exists in bookworm. A pinned version that bookworm no longer
    offers (a security update replaced it: the archive keeps only the newest) means the
    image must move its pin; that is reported as a skip naming the pins to move rather
    than a failure, because it happens on Debian's schedule, not by a change of ours."""
    pins = {}
    for st in dockerfile.stages:
        pins.update(pinned_packages(st))
    known = madison(pins)
    unknown = sorted(p for p in pins if p not in known)
    assert not unknown, f"packages that Debian bookworm does not have (apt-cache madison): {unknown}"
    moved = {p: v for p, v in pins.items() if v not in known[p]}
    if moved:
        pytest.skip("pinned versions that bookworm no longer offers; move the pins as "
                    f"deploy/images/README.md says: {moved} (offered: "
                    f"{ {p: sorted(known[p]) for p in moved} })")


def test_pins_agree_across_stages_and_images(hub, ws):
    """One package, one version: a package pinned in several stages has the same pin."""
    seen = {}
    for df in (hub, ws):
        for st in df.stages:
            for p, v in pinned_packages(st).items():
                assert seen.setdefault(p, v) == v, f"{p} pinned to {seen[p]} and {v}"


def useradd(stage):
    """(uid, gid, home, shell) of the useradd in a stage's RUNs."""
    for run in stage.all("RUN"):
        for cmd in run.args.split("&&"):
            words = shlex.split(cmd)
            if words and words[0] == "useradd":
                opts = {}
                for i, w in enumerate(words):
                    if w.startswith("--") and i + 1 < len(words):
                        opts[w] = words[i + 1]
                return (int(opts["--uid"]), int(opts["--gid"]), opts.get("--home-dir"),
                        opts.get("--shell"))
    raise AssertionError("no useradd in the runtime stage")


def final_user(stage):
    users = stage.all("USER")
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit(), "USER must be numeric, so that runAsNonRoot can check it"
    return int(uid), int(gid) if gid else None


def test_runtime_users_are_numeric_and_unprivileged(hub, ws):
    for df, want in ((hub, 10001), (ws, 1000)):
        uid, gid = final_user(df.final)
        assert uid == want and gid == want, (df.path, uid, gid)
        assert useradd(df.final)[:2] == (want, want)
    assert useradd(hub.final)[3] == "/usr/sbin/nologin"


def copies(stage):
    """[(flags, sources, dest)] of a stage's COPY instructions."""
    out = []
    for ins in stage.all("COPY") + stage.all("ADD"):
        assert ins.cmd == "COPY", f"line {ins.line}: ADD fetches and unpacks; use COPY"
        flags, words = ins.flags_and_words()
        out.append((flags, words[:-1], words[-1]))
    return out


def test_entrypoints_start_with_tini(hub, ws):
    for df, target in ((hub, "/usr/local/bin/codehub"),
                       (ws, "/usr/local/bin/codehub-entrypoint")):
        ep = df.final.all("ENTRYPOINT")
        assert len(ep) == 1
        argv = ep[0].json_args()
        assert argv and argv[:2] == ["/usr/bin/tini", "--"], argv
        assert argv[2] == target
        # The program tini runs is copied to that path, and tini comes from Debian's tini.
        assert any(dest == target for _, _, dest in copies(df.final)), target
        assert "tini" in pinned_packages(df.final)
    dpkg = shutil.which("dpkg")
    if dpkg and subprocess.run([dpkg, "-s", "tini"], capture_output=True).returncode == 0:
        files = subprocess.run([dpkg, "-L", "tini"], capture_output=True, text=True).stdout
        assert "/usr/bin/tini" in files.split()


# ---- the build context ----

def dockerignore_rules():
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((neg, re.compile(rx + r"\Z")))
    return rules


def sent_to_builder(rel, rules):
    """Whether .dockerignore lets the context path `rel` through: the last rule that matches
    the path or one of its parent directories decides (Docker's semantics)."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            included = neg
    return included


def test_dockerignore_matcher():
    rules = [(False, re.compile(r"[^/]*\Z")), (True, re.compile(r"src\Z")),
             (False, re.compile(r"(?:.*/)?[^/]*\.o\Z"))]
    assert sent_to_builder("src/a/b.c", rules)
    assert not sent_to_builder("src/a/b.o", rules)
    assert not sent_to_builder("build/codehub", rules)


def test_copy_sources_exist_and_reach_the_builder(hub, ws):
    rules = dockerignore_rules()
    n = 0
    for df in (hub, ws):
        stage_names = {s.name for s in df.stages if s.name}
        for st in df.stages:
            for flags, sources, dest in copies(st):
                if "from" in flags:
                    assert flags["from"] in stage_names, flags
                    continue
                for src in sources:
                    path = ROOT / src
                    assert path.exists(), f"{df.path}: COPY {src}: not in the repository"
                    files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                           if p.is_file()]
                    assert files, f"COPY {src}: empty"
                    for f in files:
                        rel = f.relative_to(ROOT).as_posix()
                        if "__pycache__" in rel:
                            continue
                        assert sent_to_builder(rel, rules), f"{rel} is in .dockerignore"
                        n += 1
    assert n > 10
    # What must never be sent: the git history, build trees, dependencies, venvs.
    for rel in (".git/HEAD", "build/codehub", "build-asan/codehub", ".deps/venv/bin/python",
                ".venv/bin/python", "bench/results/x.json", "tests/integ/conftest.py",
                "src/core/alloc.o"):
        assert not sent_to_builder(rel, rules), rel


# ---- the hub image ----

def test_hub_build_stage_covers_cmake_libraries(hub):
    """Every library CMakeLists.txt looks for (pkg-config modules, find_library, find_path)
    comes from a -dev package the build stage installs."""
    dpkg, pkgconf = shutil.which("dpkg"), shutil.which("pkg-config")
    if not dpkg or not pkgconf:
        pytest.skip("dpkg or pkg-config is missing")
    cmake = (ROOT / "CMakeLists.txt").read_text()
    build_pkgs = pinned_packages(hub.stage("build"))
    for tool in ("cmake", "gcc", "libc6-dev", "pkg-config", "make"):
        assert tool in build_pkgs, tool
    m = re.search(r"pkg_check_modules\(DEPS REQUIRED IMPORTED_TARGET\s+([^)]*)\)", cmake)
    assert m, "no pkg_check_modules(DEPS ...) in CMakeLists.txt"
    files = []
    for mod in m.group(1).split():
        res = subprocess.run([pkgconf, "--variable=pcfiledir", mod], capture_output=True,
                             text=True)
        assert res.returncode == 0, f"pkg-config does not know {mod} here"
        files.append(os.path.join(res.stdout.strip(), mod + ".pc"))
    for lib in re.findall(r"find_library\(\w+ (\w+) REQUIRED\)", cmake):
        res = subprocess.run(["gcc", f"-print-file-name=lib{lib}.so"], capture_output=True,
                             text=True)
        # The unversioned name is the -dev package's symbolic link; do not resolve it.
        files.append(os.path.normpath(res.stdout.strip()))
    for header in re.findall(r"find_path\(\w+ ([\w./]+) REQUIRED\)", cmake):
        files.append(os.path.join("/usr/include", header))
    assert len(files) >= 9
    for f in files:
        pkg = owning_package(f)
        assert pkg in build_pkgs, f"{f} comes from {pkg}, which the build stage lacks"


_DPKG_FILES = {}


def dpkg_files():
    """{path: package} from dpkg's file lists (one read instead of a dpkg -S per file)."""
    if not _DPKG_FILES:
        info = Path("/var/lib/dpkg/info")
        for lst in info.glob("*.list"):
            pkg = lst.stem.split(":")[0]
            for line in lst.read_text(errors="replace").splitlines():
                _DPKG_FILES.setdefault(line, pkg)
        assert _DPKG_FILES, "dpkg's file lists are empty"
    return _DPKG_FILES


def owning_package(path):
    """The Debian package that installed `path`: the path as given, then resolved, each
    also with or without the /usr prefix (merged /usr lists some files under /lib)."""
    files = dpkg_files()
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        if p.startswith("/usr/lib/"):
            candidates.append(p[len("/usr"):])
        elif p.startswith("/lib/"):
            candidates.append("/usr" + p)
    for p in candidates:
        if p in files:
            return files[p]
    raise AssertionError(f"no Debian package owns {path}")


def installed_depends():
    """{package: [[alternatives], ...]} (Depends + Pre-Depends) of every installed package,
    and the set of packages a minimal Debian system always has: Essential ones and those of
    Priority required, with everything they depend on."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f",
         "${Package}\t${db:Status-Abbrev}\t${Essential}\t${Priority}\t${Pre-Depends}, "
         "${Depends}\n"], capture_output=True, text=True, check=True)
    deps, base = {}, set()
    for line in res.stdout.splitlines():
        name, status, essential, priority, depends = line.split("\t")
        if not status.startswith("ii"):
            continue
        groups = []
        for group in depends.split(","):
            alts = [re.sub(r"[\s(:].*", "", a.strip()) for a in group.split("|")]
            alts = [a for a in alts if a]
            if alts:
                groups.append(alts)
        deps[name] = groups
        if essential == "yes" or priority == "required":
            base.add(name)
    return deps, closure(base, deps)


def closure(roots, deps):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for alts in deps.get(p, []):
            # Any installed alternative satisfies the group; follow those that are here.
            todo.extend(a for a in alts if a in deps)
    return seen


def test_hub_runtime_packages_provide_every_shared_library(hub):
    if not shutil.which("ldd") or not shutil.which("dpkg-query"):
        pytest.skip("ldd or dpkg-query is missing")
    binary = Path(BIN)
    if os.environ.get("CODEHUB_SANITIZED"):
        # `make asan` tests a binary that links the sanitizers' runtimes; the image builds
        # the release binary, so that is the one whose libraries must be there.
        binary = Path(__file__).resolve().parents[2] / "build" / "codehub"
        if not binary.exists():
            pytest.skip("only the sanitizer build is here; `make build` makes the release one")
    assert binary.exists(), f"{binary} missing: `make build` builds it before the integ tests"
    runtime = set(pinned_packages(hub.final))
    deps, base = installed_depends()
    provided = closure(runtime, deps) | base

    needed = subprocess.run(["objdump", "-p", str(binary)], capture_output=True,
                            text=True, check=True).stdout
    direct = set(re.findall(r"^\s*NEEDED\s+(\S+)$", needed, re.M))
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
    libs = {}
    for line in ldd.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            libs[m.group(1)] = m.group(2)
    assert direct and direct <= set(libs), (direct, libs)
    assert len(libs) > len(direct)  # the store and HTTP libraries bring their own
    for soname, path in libs.items():
        pkg = owning_package(path)
        if soname in direct:
            # What codehub links itself is named in the apt layer (or in every base image).
            assert pkg in runtime or pkg in base, \
                f"codehub links {soname} from {pkg}, which the runtime stage does not install"
        else:
            assert pkg in provided, \
                f"{soname} ({pkg}) is loaded but neither installed nor pulled in by a dependency"
    # No -dev package, compiler or build tool in the runtime image.
    assert not [p for p in runtime if p.endswith("-dev") or p in ("gcc", "cmake", "make")]
    assert "ca-certificates" in runtime


def default_config(hub):
    """The configuration file the hub image writes: (path, text)."""
    for run in hub.final.all("RUN"):
        m = re.search(r"printf '%s\\n'((?:\s+'[^']*')+)\s*>\s*(\S+)", run.args)
        if m:
            lines = shlex.split(m.group(1))
            return m.group(2), "\n".join(lines) + "\n"
    raise AssertionError("the hub image writes no default configuration")


def test_hub_command_line_and_default_config(hub, tmp_path):
    ep = hub.final.all("ENTRYPOINT")[0].json_args()
    cmd = hub.final.all("CMD")[0].json_args()
    assert ep[2] == "/usr/local/bin/codehub"
    assert cmd[0] == "serve" and cmd[1] == "--config"
    config_path = cmd[2]
    help_text = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert "--config FILE" in help_text
    path, text = default_config(hub)
    assert path == config_path
    conf = yaml.safe_load(text)
    # The configuration is valid for this codehub.
    f = tmp_path / "codehub.yaml"
    f.write_text(text)
    res = subprocess.run([BIN, "check-config", str(f)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    # It listens on every interface at the exposed port, with data where the volume is.
    host, _, port = conf["server"]["bind"].rpartition(":")
    assert host == "0.0.0.0"
    assert hub.final.all("EXPOSE")[0].args.split() == [port]
    data = conf["server"]["data_dir"]
    assert json.loads(hub.final.all("VOLUME")[0].args) == [data]
    run = apt_runs(hub.final)[0].args
    assert re.search(rf"install -d -o 10001 -g 10001 -m 07[05]0 {re.escape(data)}", run)
    # The binary is the one the build stage made.
    assert ("build", "/usr/local/bin/codehub") in [
        (fl.get("from"), d) for fl, _, d in copies(hub.final)]
    assert re.search(r"-DCMAKE_BUILD_TYPE=Release", " ".join(
        r.args for r in hub.stage("build").all("RUN")))


# ---- the workspace image ----

def env(stage):
    out = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.args):
            k, sep, v = word.partition("=")
            assert sep, f"ENV {word}: use the KEY=VALUE form"
            out[k] = v
    return out


def build_sh_args(stage, script):
    for run in stage.all("RUN"):
        words = shlex.split(run.args)
        if words and words[0].endswith(script):
            return words[1:]
    raise AssertionError(f"no RUN of {script}")


def test_workspace_environment_agrees_with_the_entrypoint(ws):
    e = env(ws.final)
    # The variables the entrypoint's header documents are all set.
    header = ENTRYPOINT.read_text().split("set -eu", 1)[0]
    documented = re.search(r"# Environment:(.*?)(?:\n#\s*\n|\nset )", header + "\nset ",
                           re.S).group(1)
    for var in ("HOME", "CODE_SERVER", "CODE_SERVER_PORT", "WORKSPACE_INIT_VENV"):
        assert var in documented, var
        assert var in e, f"the image does not set {var}"
    assert e["HOME"] == "/home/coder" and e["USER"] == "coder"
    assert e["LANG"] == "C.UTF-8"
    assert e["SHELL"] in ("/usr/bin/fish", "/bin/bash")
    assert useradd(ws.final)[2] == e["HOME"]
    assert json.loads(ws.final.all("VOLUME")[0].args) == [e["HOME"]]
    # EXPOSE is the port the entrypoint writes into code-server's config.
    assert ws.final.all("EXPOSE")[0].args.split() == [e["CODE_SERVER_PORT"]]
    # CODE_SERVER is the launcher that tools/code-server/build.sh writes into PREFIX/bin,
    # PREFIX is copied to the same path, and the node the launcher runs is copied too.
    prefix, node, nodedir = build_sh_args(ws.stage("code-server"),
                                          "code-server/build.sh")
    assert e["CODE_SERVER"] == prefix + "/bin/code-server"
    assert '"$prefix/bin/code-server"' in (TOOLS / "code-server" / "build.sh").read_text()
    got = {(fl.get("from"), tuple(src), dest) for fl, src, dest in copies(ws.final)}
    assert ("code-server", (prefix,), prefix) in got
    assert ("code-server", (node,), node) in got
    assert node == nodedir + "/bin/node"
    # The entrypoint is copied where ENTRYPOINT runs it, executable in git.
    assert (None, ("deploy/images/workspace/entrypoint",),
            "/usr/local/bin/codehub-entrypoint") in got
    assert os.access(ENTRYPOINT, os.X_OK)
    # Every tool the brief names: from Debian, or built and copied to /usr/local/bin.
    debian = pinned_packages(ws.final)
    for pkg in ("curl", "htop", "git", "bind9-dnsutils", "less", "fish", "nano",
                "openssh-client", "python3", "python3-pip", "python3-venv", "ripgrep",
                "ca-certificates"):
        assert pkg in debian, pkg
    for tool in GO_TOOLS:
        assert (f"go-{tool}", (f"/out/{tool}",), f"/usr/local/bin/{tool}") in got, tool
        assert build_sh_args(ws.stage(f"go-{tool}"), "./build.sh") == ["/out", tool]
    assert "docker.io" not in debian and "kubernetes-client" not in debian


def escaped(module_path):
    """A module path as the module cache spells it (upper case letters as !lower)."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), module_path)


def module_cache():
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(go, os.X_OK):
        return go, None
    res = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True,
                         timeout=30, env=dict(os.environ, GOTOOLCHAIN="local"))
    return go, Path(res.stdout.strip()) if res.returncode == 0 else None


@pytest.mark.parametrize("tool", GO_TOOLS)
def test_go_tool_module_is_pinned_and_consistent(tool):
    d = TOOLS / tool
    gomod = (d / "go.mod").read_text()
    sums = set()
    for line in (d / "go.sum").read_text().splitlines():
        mod, ver, h = line.split()
        assert re.fullmatch(r"h1:[A-Za-z0-9+/]{43}=", h), line
        sums.add((mod, ver))
    requires = re.findall(r"^\s*(?:require\s+)?([\w.~-]+(?:/[\w.~+-]+)+)\s+(v\S+)"
                          r"(?:\s*//.*)?$", gomod, re.M)
    replaced = dict((a, (b, v)) for a, b, v in re.findall(
        r"^\s*(?:replace\s+)?([\w./~-]+)\s+=>\s+([\w./~-]+)\s+(v\S+)", gomod, re.M))
    assert requires, tool
    # Every module of the graph has its go.mod pinned by hash, replacements included.
    for mod, ver in requires:
        mod, ver = replaced.get(mod, (mod, ver))
        assert (mod, ver + "/go.mod") in sums, f"{tool}: go.sum lacks {mod} {ver}/go.mod"
    # Exactly one direct requirement: the tool. Its source archive is pinned, tools.go
    # imports it, and build.sh has a build function for it.
    direct = [(m, v) for m, v in requires
              if not re.search(rf"^\s*(?:require\s+)?{re.escape(m)} \S+ // indirect$", gomod,
                               re.M)]
    assert len(direct) == 1, (tool, direct)
    main_mod, main_ver = direct[0]
    assert (main_mod, main_ver) in sums
    assert main_mod in (d / "tools.go").read_text()
    assert f"build_{tool}()" in (TOOLS / "build.sh").read_text()
    # The builder stages run the scripts straight from the build context.
    assert os.access(TOOLS / "build.sh", os.X_OK)
    assert os.access(TOOLS / "code-server" / "build.sh", os.X_OK)

    # The module graph, and every package the tool's command imports, load from the module
    # cache alone with go.mod and go.sum as they are (-mod=readonly): go.sum holds every
    # hash the build needs. Nothing is downloaded (GOPROXY=off): a cache that lacks some of
    # the tool's modules (a machine that never built it) skips this part, while a missing
    # go.sum entry or a go.mod in need of changes fails it.
    go, cache = module_cache()
    if cache is None:
        pytest.skip("no Go toolchain: the offline module checks need one")
    if not (cache / "cache" / "download" / escaped(main_mod) / "@v" / f"{main_ver}.mod").exists():
        pytest.skip(f"the Go module cache has no {main_mod}@{main_ver}")
    command = re.search(r'^import _ "(\S+)"$', (d / "tools.go").read_text(), re.M).group(1)
    offline = dict(os.environ, GOFLAGS="-mod=readonly", GOPROXY="off", GOTOOLCHAIN="local",
                   GOWORK="off", CGO_ENABLED="0")
    for argv in (["mod", "graph"], ["list", "-deps", "-f", "{{.ImportPath}}", command],
                 ["mod", "tidy", "-diff"]):
        res = subprocess.run([go, *argv], cwd=d, capture_output=True, text=True, timeout=120,
                             env=offline)
        if res.returncode != 0 and "disabled by GOPROXY=off" in res.stderr and \
                "go.sum" not in res.stderr:
            pytest.skip(f"the Go module cache lacks modules of {tool}: {res.stderr[:300]}")
        assert res.returncode == 0, \
            f"{tool}: go {' '.join(argv)}: {res.stderr[:2000]}{res.stdout[:2000]}"
        if argv[:2] == ["mod", "graph"]:
            ours = re.search(r"^module (\S+)$", gomod, re.M).group(1)
            assert f"{ours} {main_mod}@{main_ver}" in res.stdout.splitlines()
        elif argv[0] == "list":
            assert command in res.stdout.split()
        else:
            assert res.stdout == "", f"{tool}: go.mod/go.sum not tidy:\n{res.stdout[:2000]}"


def test_kubectl_staging_modules_follow_the_kubernetes_pin():
    gomod = (TOOLS / "kubectl" / "go.mod").read_text()
    kube = re.search(r"^require k8s.io/kubernetes (v1\.(\d+)\.(\d+))$", gomod, re.M)
    assert kube, "kubectl/go.mod must require k8s.io/kubernetes directly"
    staging = f"v0.{kube.group(2)}.{kube.group(3)}"
    repl = re.findall(r"^\s*(k8s.io/[\w.-]+) => (k8s.io/[\w.-]+) (v\S+)$", gomod, re.M)
    assert len(repl) >= 30
    for a, b, v in repl:
        assert a == b and v == staging, f"{a} => {b} {v}, want {staging}"


def test_docker_cli_dependencies_are_upstreams():
    """github.com/docker/cli has no go.mod, so tools/docker/go.mod alone picks its
    dependencies; they must be the versions of the pinned release's vendor.mod."""
    gomod = (TOOLS / "docker" / "go.mod").read_text()
    ver = re.search(r"^require github.com/docker/cli (v\S+)$", gomod, re.M).group(1)
    _, cache = module_cache()
    if cache is None:
        pytest.skip("no Go toolchain to find the module cache with")
    vendor = cache / "github.com" / "docker" / f"cli@{ver}" / "vendor.mod"
    if not vendor.exists():
        pytest.skip(f"{vendor} is not in the module cache")
    pat = r"^\s*([\w.~-]+(?:/[\w.~+-]+)+)\s+(v\S+)"
    upstream = dict(re.findall(pat, vendor.read_text(), re.M))
    ours = dict(re.findall(pat, gomod, re.M))
    differ = {m: (v, upstream[m]) for m, v in ours.items() if m in upstream and
              upstream[m] != v}
    assert not differ, differ
    assert len(set(ours) & set(upstream)) >= 50


def install_script_version(node_major):
    res = subprocess.run(
        ["bash", "-c", 'eval "$(sed -n "/^pick_version()/,/^}/p" "$1")"; pick_version "$2"',
         "-", str(ROOT / "scripts" / "install-code-server.sh"), str(node_major)],
        capture_output=True, text=True, timeout=10, check=True)
    return res.stdout.strip()


def lock_packages(path):
    data = json.loads(path.read_text())
    assert data["lockfileVersion"] >= 2
    return data["packages"]


def test_code_server_lockfiles(ws):
    node_image = ws.resolve_image(ws.stage("code-server").image)
    node_major = int(re.match(r"node:(\d+)\.", node_image).group(1))
    want = install_script_version(node_major)
    assert re.fullmatch(r"\d+\.\d+\.\d+", want)
    pkg = json.loads((TOOLS / "code-server" / "package.json").read_text())
    assert pkg["dependencies"] == {"code-server": want}, "an exact version, not a range"
    lock = lock_packages(TOOLS / "code-server" / "package-lock.json")
    assert lock[""]["dependencies"] == {"code-server": want}
    cs = lock["node_modules/code-server"]
    assert cs["version"] == want
    # code-server's engines name the Node major of the image.
    assert str(node_major) in cs.get("engines", {}).get("node", str(node_major))
    shrink = lock_packages(TOOLS / "code-server" / "vscode-npm-shrinkwrap.json")
    # code-server 4.X.Y ships VS Code 1.X.Y: the shrinkwrap belongs to this release.
    assert shrink[""]["version"] == "1." + want.split(".", 1)[1]
    for name, packages in (("package-lock.json", lock),
                           ("vscode-npm-shrinkwrap.json", shrink)):
        assert len(packages) > 50
        for key, entry in packages.items():
            if not key or entry.get("link"):
                continue
            integrity = entry.get("integrity", "")
            assert re.search(r"(^|\s)sha512-[A-Za-z0-9+/]{86}==", integrity), \
                f"{name}: {key} has no sha512 integrity"
            assert not entry.get("resolved", "").startswith(("git", "file:")), key
    # The install scripts of the top level are the two build.sh handles by hand.
    scripts = {k for k, v in lock.items() if v.get("hasInstallScript")}
    assert scripts == {"node_modules/code-server", "node_modules/argon2"}, scripts
    text = (TOOLS / "code-server" / "build.sh").read_text()
    assert "npm_config_build_from_source=true npm rebuild argon2" in text
    assert text.count("--ignore-scripts") >= 3


# ---- the images and the Helm chart ----

def test_images_agree_with_the_helm_chart(hub, ws):
    values_file = CHART / "values.yaml"
    helpers = CHART / "templates" / "_helpers.tpl"
    if not values_file.exists() or not helpers.exists():
        pytest.skip("no Helm chart in deploy/helm/codehub")
    values = yaml.safe_load(values_file.read_text())
    tpl = helpers.read_text()

    def define(name):
        m = re.search(r'define "codehub\.' + name + r'" -\}\}(.*?)\{\{-', tpl)
        assert m, name
        return m.group(1).strip()

    cmd = hub.final.all("CMD")[0].json_args()
    assert define("configFile") == cmd[2]
    conf = yaml.safe_load(default_config(hub)[1])
    assert define("dataDir") == conf["server"]["data_dir"]
    assert define("port") == hub.final.all("EXPOSE")[0].args
    single = values["singleuser"]
    e = env(ws.final)
    assert single["uid"] == final_user(ws.final)[0]
    assert single["gid"] == final_user(ws.final)[1]
    assert str(single["port"]) == e["CODE_SERVER_PORT"]
    assert single["storage"]["homeMountPath"] == e["HOME"]
