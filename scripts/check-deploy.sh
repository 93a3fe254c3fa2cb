#!/usr/bin/env bash
# Deployment checks (CI): Dockerfile, Helm chart, plain/kustomize manifests,
# Prometheus rules, compose files, nginx config and every config file they
# mount, each checked by a real tool:
#   helm lint / render ........ PyPI helm-python-sdk (Helm v4 SDK, no helm binary)
#   Kubernetes schemas ........ PyPI kubernetes-validate --strict
#   kustomize ................. kubectl kustomize (kubectl ships with the machine image)
#   Prometheus rules .......... promtool check rules / test rules (Debian prometheus)
#   compose ................... docker-compose config -q (Debian docker-compose v1)
#   nginx ..................... nginx -t on a loopback copy of compose/ha/nginx.conf
#   config files .............. `yatagarasu check -c FILE` (the real binary)
# Installs what it needs (idempotent), runs every check, prints
# `deploy-checks: N passed, M failed` and exits non-zero on any failure.
#
# Env: YATAGARASU_BIN   built binary (default target/debug/yatagarasu; built if missing)
#      RUN_HA_DRILL=1   also run scripts/ha-drill.sh --quick
#      ALLOW_MISSING_SUBCOMMANDS=1  report binary steps as skipped (not failed)
#                       when the binary lacks `check`
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START_TS=$(date +%s)

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/yatagarasu-deploy-checks.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*"; }

# check NAME CMD...: runs CMD, output to a log shown on failure.
check() {
    local name="$1"; shift
    local out="$WORK/check-$((PASSED + FAILED + SKIPPED)).log"
    if "$@" >"$out" 2>&1; then
        PASSED=$((PASSED + 1))
        log "PASS  $name"
        [[ -n "${VERBOSE:-}" ]] && sed 's/^/      /' "$out"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        log "FAIL  $name"
        sed 's/^/      /' "$out" | tail -n 40
    fi
    return 0
}

skip() {
    SKIPPED=$((SKIPPED + 1))
    log "SKIP  $1: $2"
}

fail_now() {
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$1")
    log "FAIL  $1: $2"
}

# ---------------------------------------------------------------- installs
SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

apt_pkgs=()
command -v docker-compose >/dev/null 2>&1 || apt_pkgs+=(docker-compose)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || apt_pkgs+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || apt_pkgs+=(redis-server)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
APT_UPDATED=0
apt_update_once() {
    ((APT_UPDATED)) && return 0
    APT_UPDATED=1
    $SUDO apt-get update -qq
}
if ((${#apt_pkgs[@]})); then
    log "installing Debian packages: ${apt_pkgs[*]}"
    if ! { apt_update_once && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"; } >"$WORK/apt.log" 2>&1; then
        log "apt-get install failed:"; tail -n 20 "$WORK/apt.log"
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/yatagarasu-ci"
# promtool: from Debian's prometheus package, unpacked into the cache (no
# Prometheus server installed or started); a full install as the fallback.
export PATH="$CACHE_DIR/bin:$PATH"
if ! command -v promtool >/dev/null 2>&1; then
    log "fetching promtool (Debian package prometheus)"
    mkdir -p "$CACHE_DIR/bin" "$WORK/deb"
    if ! { (cd "$WORK/deb" && { apt-get download prometheus 2>/dev/null || { apt_update_once && apt-get download prometheus; }; }) &&
        dpkg-deb -x "$WORK"/deb/prometheus_*.deb "$WORK/deb/x" &&
        install -m 0755 "$WORK/deb/x/usr/bin/promtool" "$CACHE_DIR/bin/promtool"; } >"$WORK/promtool.log" 2>&1; then
        { apt_update_once && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >>"$WORK/promtool.log" 2>&1 ||
            { log "promtool install failed:"; tail -n 20 "$WORK/promtool.log"; }
    fi
fi
VENV="$CACHE_DIR/venv"
PIP_PKGS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3 dockerfile-parse==2.0.1)
STAMP="$VENV/.yatagarasu-requirements"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "${PIP_PKGS[*]}" ]]; then
    log "preparing python venv at $VENV"
    mkdir -p "$CACHE_DIR"
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PKGS[@]}" &&
        printf '%s' "${PIP_PKGS[*]}" >"$STAMP"; } >"$WORK/pip.log" 2>&1 || {
        log "venv setup failed:"; tail -n 20 "$WORK/pip.log"
    }
fi
PY="$VENV/bin/python"
KV="$VENV/bin/kubernetes-validate"

# ---------------------------------------------------------------- binary
BIN="${YATAGARASU_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/yatagarasu}"
if [[ ! -x "$BIN" && -z "${YATAGARASU_BIN:-}" ]]; then
    log "building $BIN (cargo build --bin yatagarasu)"
    cargo build --bin yatagarasu >"$WORK/cargo.log" 2>&1 || { log "cargo build failed:"; tail -n 30 "$WORK/cargo.log"; }
fi
HAVE_CHECK=0
if [[ -x "$BIN" ]] && "$BIN" --help 2>/dev/null | grep -qE '^\s+check\b'; then HAVE_CHECK=1; fi

# ---------------------------------------------------------------- python checker
cat >"$WORK/checks.py" <<'PY'
"""Assertions over rendered manifests, compose files and the Dockerfile."""
import json
import os
import re
import sys

import yaml

SEED_ALERTS = {
    "YatagarasuReplicaDown": ("yatagarasu_replica_health == 0", "5m", "warning"),
    "YatagarasuAllReplicasDown": ("sum(yatagarasu_replica_health) == 0", "1m", "critical"),
    "YatagarasuHighFailoverRate": ("rate(yatagarasu_replica_failover_total[5m]) > 1", "10m", "warning"),
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


class CheckError(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise CheckError(msg)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ helm
def helm_lint(chart, values_file):
    import helm_python as helm

    values = yaml.safe_load(open(values_file)) if values_file else None
    report = helm.lint(chart, values, strict=True)
    for m in report.get("messages", []):
        print(f"severity={m['severity']} {m['path']}: {m['error']}")
    need(report.get("total_charts_linted") == 1, "chart not linted")
    need(not report.get("errors"), f"lint errors: {report.get('errors')}")
    need(all(m["severity"] < 2 for m in report.get("messages", [])), "lint warnings/errors")


def helm_render(chart, values_file, out):
    import helm_python as helm

    values = yaml.safe_load(open(values_file)) if values_file else None
    ch = helm.Chart.load(chart)
    ch.validate_schema(values)
    rendered = ch.render(values, name="yatagarasu", namespace="yatagarasu", is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append(d)
    need(docs, "nothing rendered")
    with open(out, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    print(f"{len(docs)} objects: " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))


# ------------------------------------------------------------------ schemas
def crds(path):
    """Structure of the Prometheus Operator objects (no upstream schema offline)."""
    docs = load_docs(path)
    for d in docs:
        kind = d.get("kind")
        if kind not in CRD_KINDS:
            continue
        need(d.get("apiVersion") == "monitoring.coreos.com/v1", f"{kind}: apiVersion")
        need(d.get("metadata", {}).get("name"), f"{kind}: metadata.name")
        spec = d.get("spec", {})
        if kind == "ServiceMonitor":
            need(spec.get("selector", {}).get("matchLabels"), "ServiceMonitor: selector.matchLabels")
            eps = spec.get("endpoints") or []
            need(eps and all(e.get("port") and e.get("path") == "/metrics" for e in eps),
                 "ServiceMonitor: endpoints need port and path /metrics")
            svcs = [s for s in by_kind(docs, "Service")
                    if matches(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
            if by_kind(docs, "Service"):
                need(svcs, "ServiceMonitor selects no Service in the same render")
                need(any(p.get("name") == eps[0]["port"] for s in svcs for p in s["spec"]["ports"]),
                     "ServiceMonitor port not on the selected Service")
        else:
            alerts_equal(spec, "PrometheusRule")
        print(f"ok {kind}/{d['metadata']['name']}")


def alerts_equal(groups_doc, what):
    here = os.path.dirname(os.path.abspath(__file__))
    ref = yaml.safe_load(open(os.environ["ALERTS_FILE"]))
    need(groups_doc.get("groups") == ref["groups"], f"{what}: groups differ from k8s/prometheus/yatagarasu-alerts.yaml")


def alerts(path, *others):
    doc = yaml.safe_load(open(path))
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}
    for name, (expr, for_, sev) in SEED_ALERTS.items():
        need(name in rules, f"missing alert {name}")
        r = rules[name]
        need(r["expr"].strip() == expr, f"{name}: expr {r['expr']!r} != seed {expr!r}")
        need(r.get("for") == for_, f"{name}: for {r.get('for')} != {for_}")
        need(r.get("labels", {}).get("severity") == sev, f"{name}: severity")
        need(r.get("annotations", {}).get("summary"), f"{name}: summary")
    for other in others:
        if other.endswith("yatagarasu-alerts.yaml"):
            need(open(other).read() == open(path).read(), f"{other} is not a copy of {path}")
        else:
            for d in load_docs(other):
                if d.get("kind") == "PrometheusRule":
                    need(d["spec"].get("groups") == doc["groups"], f"{other}: PrometheusRule groups differ")
    print(f"{len(rules)} alerts match the seed")


# ------------------------------------------------------------------ HA properties
def ha(path, profile):
    """profile: ha (3 replicas, spread, PDB, HPA) | base (single deployment)."""
    docs = load_docs(path)
    deps = [d for d in by_kind(docs, "Deployment")
            if any(c["name"] == "yatagarasu" for c in d["spec"]["template"]["spec"]["containers"])]
    need(len(deps) == 1, f"expected 1 yatagarasu Deployment, got {len(deps)}")
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"]["labels"]
    pspec = pod["spec"]
    sel = spec["selector"]["matchLabels"]
    need(matches(sel, pod_labels), "Deployment selector does not match its pod labels")
    c = next(c for c in pspec["containers"] if c["name"] == "yatagarasu")

    # strategy
    st = spec.get("strategy", {})
    need(st.get("type") == "RollingUpdate", "strategy must be RollingUpdate")
    need(st["rollingUpdate"].get("maxSurge") == 1 and st["rollingUpdate"].get("maxUnavailable") == 0,
         "rollingUpdate must be maxSurge 1 / maxUnavailable 0")

    # probes
    need(c["livenessProbe"]["httpGet"]["path"] == "/health", "liveness must be /health")
    need(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness must be /ready")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    need(ports.get("http") == 8080 and ports.get("metrics") == 9090, f"container ports {ports}")
    for probe in ("livenessProbe", "readinessProbe"):
        port = c[probe]["httpGet"]["port"]
        need(port in (8080, "http"), f"{probe} must target the proxy port")

    # config: ConfigMap mounted at /etc/yatagarasu with config.yaml
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    cfg_vol = next((v for v in pspec.get("volumes", []) if "configMap" in v
                    and mounts.get(v["name"], {}).get("mountPath") == "/etc/yatagarasu"), None)
    need(cfg_vol, "no ConfigMap mounted at /etc/yatagarasu")
    cms = [m for m in by_kind(docs, "ConfigMap") if m["metadata"]["name"] == cfg_vol["configMap"]["name"]]
    need(cms and "config.yaml" in cms[0]["data"], "mounted ConfigMap has no config.yaml")
    cfg = yaml.safe_load(cms[0]["data"]["config.yaml"])
    args = c.get("args", []) + c.get("command", [])
    need("/etc/yatagarasu/config.yaml" in args or not args, "container must use /etc/yatagarasu/config.yaml")

    # graceful shutdown: preStop sleep + drain <= terminationGracePeriodSeconds
    cmd = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    m = re.search(r"sleep (\d+)", cmd)
    need(m, f"preStop must sleep: {cmd}")
    sleep = int(m.group(1))
    drain = int(cfg.get("server", {}).get("shutdown_grace_seconds", 30))
    tgps = pspec.get("terminationGracePeriodSeconds", 30)
    need(sleep + drain <= tgps <= sleep + drain + 15,
         f"terminationGracePeriodSeconds {tgps} does not match preStop {sleep}s + drain {drain}s")

    # resources
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        need(res.get(kind, {}).get("memory"), f"resources.{kind}.memory missing")
    need(res["requests"].get("cpu"), "resources.requests.cpu missing")

    # security context
    psc = pspec.get("securityContext", {})
    csc = c.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot")
    need((psc.get("runAsUser") or csc.get("runAsUser") or 0) != 0, "runAsUser must not be 0")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    need("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities must drop ALL")
    need(csc.get("privileged") in (None, False), "must not be privileged")
    need((psc.get("seccompProfile") or csc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
         "seccompProfile RuntimeDefault")
    need(pspec.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")

    # credentials from a Secret reference, never inline
    env_from = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    env_refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    if profile != "helm-default":
        need(env_from or env_refs, "credentials must come from a Secret reference")
    for e in c.get("env", []):
        need(not re.search(r"SECRET|PASSWORD|ACCESS_KEY", e["name"]) or "valueFrom" in e,
             f"env {e['name']} looks like an inline credential")

    # Services on 8080 and 9090 selecting these pods
    svc_ports = {}
    for s in by_kind(docs, "Service"):
        if matches(s["spec"].get("selector", {}), pod_labels) and s["spec"].get("selector"):
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                svc_ports[p["port"]] = ports.get(tp, tp)
    need(svc_ports.get(8080) == 8080, f"no Service port 8080 -> pods (have {svc_ports})")
    need(svc_ports.get(9090) == 9090, f"no Service port 9090 -> pods (have {svc_ports})")

    if profile == "base":
        print(f"base ok: probes, preStop {sleep}s + drain {drain}s <= {tgps}s, securityContext, services 8080/9090")
        return

    need(spec.get("replicas") == 3, f"replicas {spec.get('replicas')} != 3")
    tsc = pspec.get("topologySpreadConstraints", [])
    need(any(t["topologyKey"] == "kubernetes.io/hostname" and t["maxSkew"] == 1
             and matches(t["labelSelector"]["matchLabels"], pod_labels) for t in tsc),
         "topologySpreadConstraints over kubernetes.io/hostname missing")
    pref = pspec.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    need(any(p["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
             and matches(p["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels) for p in pref),
         "preferred podAntiAffinity over zones missing")

    pdbs = by_kind(docs, "PodDisruptionBudget")
    need(len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") == 2, "PDB minAvailable 2 missing")
    need(matches(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels), "PDB selector does not match pods")

    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    need(len(hpas) == 1, "HPA missing")
    h = hpas[0]["spec"]
    need(h["scaleTargetRef"]["kind"] == "Deployment" and h["scaleTargetRef"]["name"] == dep["metadata"]["name"],
         "HPA must target the Deployment")
    need(h["minReplicas"] == 3 and h["maxReplicas"] == 20, "HPA must be 3-20")
    cpu = [m for m in h["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    need(cpu and cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}, "HPA CPU 70%")

    redis = (cfg.get("cache") or {}).get("redis") or {}
    if profile in ("helm-ha", "kustomize-ha"):
        need(redis.get("enabled") is True, "HA config must enable the Redis cache")
        url = redis.get("url", "")
        host = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", url)
        m = re.match(r"redis://([^:/]+):(\d+)", host)
        need(m, f"redis url {url!r}")
        vsvc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == m.group(1)]
        need(vsvc and any(p["port"] == int(m.group(2)) for p in vsvc[0]["spec"]["ports"]),
             f"redis url {url} names no Service in the render")
        vdep = [d for d in by_kind(docs, "Deployment") if d is not dep and
                matches(vsvc[0]["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        need(vdep, "no Valkey Deployment behind the redis Service")
        vargs = " ".join(vdep[0]["spec"]["template"]["spec"]["containers"][0].get("args", []))
        need("--maxmemory " in vargs and "allkeys-lru" in vargs, f"Valkey needs maxmemory + allkeys-lru: {vargs}")
        need(not matches(sel, vdep[0]["spec"]["template"]["metadata"]["labels"]),
             "Valkey pods must not match the proxy selector")
    if profile == "helm-ha":
        need(by_kind(docs, "ServiceMonitor"), "HA values must render a ServiceMonitor")
        need(by_kind(docs, "PrometheusRule"), "HA values must render a PrometheusRule")
    print(f"{profile} ok: replicas 3, RollingUpdate 1/0, hostname spread, zone anti-affinity, "
          f"/health + /ready, preStop {sleep}s + drain {drain}s <= {tgps}s, securityContext, "
          f"services 8080/9090, PDB 2, HPA 3-20@70%" + (", valkey cache" if redis else ""))


def extract_configs(path, outdir):
    """Write every ConfigMap's config.yaml to outdir (for `yatagarasu check`)."""
    n = 0
    for d in load_docs(path):
        if d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {}):
            n += 1
            with open(os.path.join(outdir, f"{d['metadata']['name']}.yaml"), "w") as f:
                f.write(d["data"]["config.yaml"])
    need(n, "no ConfigMap with config.yaml")
    print(n)


# ------------------------------------------------------------------ compose
def compose_ha(path):
    doc = yaml.safe_load(open(path))
    svc = doc["services"]
    for name in ("nginx", "yatagarasu-1", "yatagarasu-2", "yatagarasu-3", "valkey",
                 "minio-primary", "minio-backup", "minio-init"):
        need(name in svc, f"service {name} missing")
    vols = lambda s: [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in s.get("volumes", [])]
    need(any("nginx.conf" in v and "/etc/nginx/nginx.conf" in v for v in vols(svc["nginx"])), "nginx.conf not mounted")
    need(set(svc["nginx"].get("depends_on", {})) >= {"yatagarasu-1", "yatagarasu-2", "yatagarasu-3"}, "nginx depends_on")
    for i in (1, 2, 3):
        s = svc[f"yatagarasu-{i}"]
        need(any("config.yaml" in v and "/etc/yatagarasu/config.yaml" in v for v in vols(s)),
             f"yatagarasu-{i}: config.yaml not mounted at /etc/yatagarasu/config.yaml")
        need("valkey" in s.get("depends_on", {}), f"yatagarasu-{i} must depend on valkey")
        env = s.get("environment", {})
        env = env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)
        need(env.get("REDIS_URL") == "redis://valkey:6379", f"yatagarasu-{i}: REDIS_URL")
        need(s.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), "memory limit")
    cmd = svc["valkey"]["command"]
    cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
    need("--maxmemory 512mb" in cmd and "--maxmemory-policy allkeys-lru" in cmd, f"valkey command: {cmd}")
    dep = svc["minio-init"]["depends_on"]
    need(isinstance(dep, dict) and all(dep[m]["condition"] == "service_healthy" for m in ("minio-primary", "minio-backup")),
         "minio-init must wait for both MinIO servers to be healthy")
    print("compose HA services ok")


def compose_tutorial(path):
    doc = yaml.safe_load(open(path))
    svc = doc["services"]
    need(set(svc) == {"yatagarasu", "minio-primary", "minio-backup", "minio-init"}, f"services {sorted(svc)}")
    ports = [str(p.get("published")) + ":" + str(p.get("target")) if isinstance(p, dict) else p
             for p in svc["yatagarasu"].get("ports", [])]
    need("8080:8080" in ports and "9090:9090" in ports, f"yatagarasu ports {ports}")
    print("compose tutorial services ok")


# ------------------------------------------------------------------ Dockerfile
def dockerfile(path, ignore):
    from dockerfile_parse import DockerfileParser

    d = DockerfileParser(path)
    instr = [(i["instruction"], i["value"]) for i in d.structure if i["instruction"] != "COMMENT"]
    froms = [v for k, v in instr if k == "FROM"]
    need(len(froms) >= 2, "must be multi-stage")
    last_from = max(i for i, (k, _) in enumerate(instr) if k == "FROM")
    build, final = instr[:last_from], instr[last_from:]
    need(any(k == "RUN" and "cargo build --release" in v and "--bin yatagarasu" in v for k, v in build),
         "build stage must `cargo build --release --bin yatagarasu`")
    need(any(k == "COPY" and v.startswith("--from=") and "yatagarasu" in v for k, v in final),
         "final stage must COPY the binary --from the build stage")
    users = [v for k, v in final if k == "USER"]
    need(users and users[-1].split(":")[0] not in ("root", "0"), "final stage must run as a non-root USER")
    exposed = " ".join(v for k, v in final if k == "EXPOSE").split()
    need("8080" in exposed and "9090" in exposed, f"EXPOSE {exposed}")
    text = " ".join(v for k, v in final if k in ("ENV", "CMD", "ENTRYPOINT"))
    need("/etc/yatagarasu/config.yaml" in text, "default config path /etc/yatagarasu/config.yaml")
    need(not any(k == "FROM" and "rust" in v for k, v in final), "runtime image must not be the Rust image")
    ign = [l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")]
    need(any(l.rstrip("/") in ("target", "**/target") for l in ign), ".dockerignore must exclude target/")
    need(any(l.rstrip("/") == ".git" for l in ign), ".dockerignore must exclude .git")
    print(f"stages: {froms}; USER {users[-1]}; EXPOSE {' '.join(exposed)}")


if __name__ == "__main__":
    try:
        globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
    except CheckError as e:
        print(f"assertion failed: {e}")
        sys.exit(1)
PY

py() { "$PY" "$WORK/checks.py" "$@"; }
export ALERTS_FILE="$ROOT/k8s/prometheus/yatagarasu-alerts.yaml"

# kubernetes-validate --strict; only the Prometheus Operator kinds may lack a schema.
kvalidate() {
    local out rc
    out=$("$KV" --strict "$@" 2>&1); rc=$?
    printf '%s\n' "$out"
    [[ $rc -eq 0 ]] || return 1
    if printf '%s\n' "$out" | grep -i "couldn't find schema" | grep -vqE 'kind (PrometheusRule|ServiceMonitor) '; then
        echo "unknown kind without a schema"; return 1
    fi
    printf '%s\n' "$out" | grep -q "passed for resource" || { echo "nothing validated"; return 1; }
}

kustomize_build() { kubectl kustomize "$1" >"$2"; }

nginx_test() {
    # compose/ha/nginx.conf with the upstream hostnames mapped to loopback ports,
    # tested in a private prefix (no /etc/hosts edits, nothing left behind).
    local p="$WORK/nginx"
    mkdir -p "$p/logs" "$p/tmp"
    sed -E -e 's/server yatagarasu-([0-9]):8080/server 127.0.0.1:1808\1/' \
        -e 's#^( *)listen 80;#\1listen 127.0.0.1:18080;#' \
        -e "s#access_log /dev/stdout;#access_log $p/logs/access.log;#" \
        -e "s#error_log /dev/stderr#error_log $p/logs/error.log#" \
        -e "s#^http \\{#http {\n    client_body_temp_path $p/tmp/body;\n    proxy_temp_path $p/tmp/proxy;\n    fastcgi_temp_path $p/tmp/fastcgi;\n    uwsgi_temp_path $p/tmp/uwsgi;\n    scgi_temp_path $p/tmp/scgi;#" \
        compose/ha/nginx.conf >"$p/nginx.conf"
    if grep -qE 'yatagarasu-[0-9]' "$p/nginx.conf"; then echo "hostnames left in the test copy"; return 1; fi
    nginx -t -p "$p" -c "$p/nginx.conf" -e "$p/logs/error.log" -g "pid $p/nginx.pid;"
}

nginx_shape() {
    local f=compose/ha/nginx.conf
    grep -qE '^\s*least_conn;' $f || { echo "least_conn missing"; return 1; }
    grep -qE '^\s*keepalive [0-9]+;' $f || { echo "keepalive missing"; return 1; }
    grep -qE '^\s*proxy_next_upstream error timeout http_502 http_503;' $f || { echo "proxy_next_upstream missing"; return 1; }
    grep -qE '^\s*proxy_next_upstream_tries 3;' $f || { echo "proxy_next_upstream_tries missing"; return 1; }
    [[ $(grep -E '^\s*server yatagarasu-[123]:8080' $f | grep -vc ' backup') -eq 3 ]] || { echo "3 upstream servers expected"; return 1; }
    grep -qE 'proxy_set_header Connection "";' $f || { echo "upstream keepalive needs Connection \"\""; return 1; }
    echo "least_conn, keepalive, proxy_next_upstream, 3 upstreams"
}

config_check() {
    # yatagarasu check with dummy credentials (the configs use ${VAR} substitution).
    env AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy MINIO_ACCESS_KEY=dummy MINIO_SECRET_KEY=dummy \
        "$BIN" check -c "$1"
}

config_check_rejects_unset() {
    # Negative control: without the credentials the check must fail, naming the variable.
    local out
    if out=$(env -u MINIO_ACCESS_KEY -u MINIO_SECRET_KEY "$BIN" check -c compose/tutorial/config.yaml 2>&1); then
        echo "$out"; echo "expected failure with MINIO_ACCESS_KEY unset"; return 1
    fi
    echo "$out"
    grep -q MINIO_ACCESS_KEY <<<"$out" || { echo "error does not name MINIO_ACCESS_KEY"; return 1; }
}

# ---------------------------------------------------------------- checks
log "== image"
check "Dockerfile: multi-stage release build, non-root runtime, 8080/9090, /etc/yatagarasu/config.yaml" \
    py dockerfile Dockerfile .dockerignore

log "== prometheus rules"
if command -v promtool >/dev/null 2>&1; then
    check "promtool check rules k8s/prometheus/yatagarasu-alerts.yaml" promtool check rules k8s/prometheus/yatagarasu-alerts.yaml
    check "promtool test rules (alerts fire as documented)" \
        bash -c 'cd k8s/prometheus && promtool test rules yatagarasu-alerts.test.yaml'
else
    fail_now "promtool" "promtool not installed (Debian package prometheus)"
fi
check "alerts match the seed; chart and k8s/monitoring copies identical" \
    py alerts k8s/prometheus/yatagarasu-alerts.yaml k8s/helm/yatagarasu/files/yatagarasu-alerts.yaml k8s/monitoring/prometheusrule.yaml

log "== helm chart (helm-python-sdk)"
CHART=k8s/helm/yatagarasu
HA_VALUES=$CHART/ci/ha-values.yaml
check "helm lint --strict (default values)" py helm-lint $CHART ""
check "helm lint --strict (HA values)" py helm-lint $CHART $HA_VALUES
check "helm render (default values)" py helm-render $CHART "" "$WORK/helm-default.yaml"
check "helm render (HA values)" py helm-render $CHART $HA_VALUES "$WORK/helm-ha.yaml"
for r in default ha; do
    f="$WORK/helm-$r.yaml"
    [[ -s $f ]] || { fail_now "helm $r render missing" "see above"; continue; }
    check "kubernetes-validate --strict: helm $r render" kvalidate "$f"
    check "Prometheus Operator objects: helm $r render" py crds "$f"
    check "HA properties: helm $r render" py ha "$f" "helm-$r"
done

log "== plain manifests (kustomize)"
if command -v kubectl >/dev/null 2>&1; then
    check "kubectl kustomize k8s/base" kustomize_build k8s/base "$WORK/k-base.yaml"
    check "kubectl kustomize k8s/overlays/ha" kustomize_build k8s/overlays/ha "$WORK/k-ha.yaml"
    check "kubectl kustomize k8s/monitoring" kustomize_build k8s/monitoring "$WORK/k-mon.yaml"
    [[ -s $WORK/k-base.yaml ]] && check "kubernetes-validate --strict: kustomize base" kvalidate "$WORK/k-base.yaml"
    [[ -s $WORK/k-ha.yaml ]] && check "kubernetes-validate --strict: kustomize HA overlay" kvalidate "$WORK/k-ha.yaml"
    [[ -s $WORK/k-mon.yaml ]] && check "Prometheus Operator objects: k8s/monitoring" py crds "$WORK/k-mon.yaml"
    [[ -s $WORK/k-base.yaml ]] && check "base properties: kustomize base" py ha "$WORK/k-base.yaml" base
    [[ -s $WORK/k-ha.yaml ]] && check "HA properties: kustomize HA overlay" py ha "$WORK/k-ha.yaml" kustomize-ha
else
    fail_now "kustomize" "kubectl not found (needed for kubectl kustomize)"
fi
# Every complete manifest file on its own (patches are partial by design).
plain=()
for f in k8s/base/*.yaml k8s/overlays/ha/*.yaml; do
    case "$(basename "$f")" in kustomization.yaml | config.yaml | deployment-ha.yaml) continue ;; esac
    plain+=("$f")
done
check "kubernetes-validate --strict: each plain manifest (${#plain[@]} files)" kvalidate "${plain[@]}"

log "== compose"
for stack in ha tutorial; do
    f=compose/$stack/docker-compose.yml
    check "docker-compose config -q: $f" docker-compose -f "$f" config -q
    check "compose $stack topology" bash -c "docker-compose -f '$f' config > '$WORK/compose-$stack.yaml' && '$PY' '$WORK/checks.py' compose-$stack '$WORK/compose-$stack.yaml'"
done

log "== nginx"
check "nginx.conf shape (least_conn, keepalive, proxy_next_upstream)" nginx_shape
if command -v nginx >/dev/null 2>&1; then
    check "nginx -t: compose/ha/nginx.conf (upstreams mapped to 127.0.0.1)" nginx_test
else
    fail_now "nginx -t" "nginx not installed"
fi

log "== config files, validated by the real binary ($BIN)"
configs=(compose/ha/config.yaml compose/tutorial/config.yaml k8s/base/config.yaml k8s/overlays/ha/config.yaml)
mkdir -p "$WORK/rendered-configs"
for r in helm-default helm-ha k-base k-ha; do
    [[ -s $WORK/$r.yaml ]] || continue
    mkdir -p "$WORK/rendered-configs/$r"
    if py extract-configs "$WORK/$r.yaml" "$WORK/rendered-configs/$r" >/dev/null; then
        for c in "$WORK/rendered-configs/$r"/*.yaml; do configs+=("$c"); done
    fi
done
if [[ ! -x "$BIN" ]]; then
    fail_now "yatagarasu check" "binary $BIN not built"
elif [[ $HAVE_CHECK -ne 1 ]]; then
    if [[ -n "${ALLOW_MISSING_SUBCOMMANDS:-}" ]]; then
        skip "yatagarasu check (${#configs[@]} configs)" "binary has no \`check\` subcommand yet"
    else
        fail_now "yatagarasu check" "binary $BIN has no \`check\` subcommand (not implemented yet)"
    fi
else
    for c in "${configs[@]}"; do
        check "yatagarasu check -c ${c#"$WORK"/}" config_check "$c"
    done
    check "yatagarasu check rejects a config whose \${VAR} is unset" config_check_rejects_unset
fi

log "== scripts"
check "bash -n scripts/ha-drill.sh" bash -n scripts/ha-drill.sh
if [[ -n "${RUN_HA_DRILL:-}" ]]; then
    check "HA drill (scripts/ha-drill.sh --quick): 0 failed requests" env YATAGARASU_BIN="$BIN" scripts/ha-drill.sh --quick
fi

END_TS=$(date +%s)
log ""
if ((FAILED)); then
    log "failed checks:"; for n in "${FAILED_NAMES[@]}"; do log "  - $n"; done
fi
log "(took $((END_TS - START_TS))s)"
if ((SKIPPED)); then
    log "deploy-checks: $PASSED passed, $FAILED failed, $SKIPPED skipped"
else
    log "deploy-checks: $PASSED passed, $FAILED failed"
fi
((FAILED == 0))
