#!/usr/bin/env bash
# Deployment checks (CI): Dockerfile, Helm chart, plain/kustomize manifests,
# Prometheus rules, compose files, nginx config and every config file they
# mount, each checked by a real tool:
#   helm lint / render ........ PyPI helm-python-sdk (Helm v4 SDK, no helm binary)
#   Kubernetes schemas ........ PyPI kubernetes-validate --strict
#   kustomize ................. kubectl kustomize (kubectl ships with the machine image)
#   Prometheus rules .......... promtool check rules / test rules (Debian prometheus)
#   Grafana dashboard ......... every query parsed by promtool (one recording rule each)
#   compose ................... docker-compose config -q (Debian docker-compose v1)
#   nginx ..................... nginx -t on a loopback copy of compose/ha/nginx.conf
#   config files .............. `yatagarasu check -c FILE` (the real binary)
#   healthchecks .............. the image's HEALTHCHECK and each compose proxy service's
#                               healthcheck run `yatagarasu healthcheck` (the binary's --help too)
# Helm scenarios: ci/minimal-values.yaml, ci/ha-values.yaml (with and without
# the Prometheus Operator API), ci/tls-netpol-values.yaml (TLS + NetworkPolicy),
# ci/mtls-values.yaml (mutual TLS, metrics over HTTPS, ServiceMonitor https),
# ci/mtls-plain-metrics-values.yaml (mutual TLS, plain metrics port),
# ci/external-redis-values.yaml (Sentinel); the default values must refuse to
# install (no bucket), as must a config whose ${VAR} nothing provides, and
# mTLS / metrics TLS settings that could not work.
# Installs what it needs (idempotent), runs every check, prints
# `deploy-checks: N passed, M failed` and exits non-zero on any failure.
#
# Env: YATAGARASU_BIN   built binary (default target/debug/yatagarasu; built if missing)
#      CHART_DIR        the Helm chart to check (default k8s/helm/yatagarasu), e.g.
#                       an older copy, to see which checks it fails
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


def _render(chart, values_file, api_versions=""):
    """Renders offline; api_versions (comma-separated, e.g. the Prometheus
    Operator kinds) are what .Capabilities.APIVersions.Has sees."""
    import helm_python as helm
    from helm_python import _native

    values = yaml.safe_load(open(values_file)) if values_file else None
    ch = helm.Chart.load(chart)
    ch.validate_schema(values)
    opts = {"name": "yatagarasu", "namespace": "yatagarasu", "is_install": True}
    if api_versions:
        # helm-python-sdk 0.2.2 has no keyword for it; its native render takes the option.
        opts["api_versions"] = api_versions.split(",")
    return json.loads(_native.call_string("helm_render", ch._raw(), json.dumps(values) if values is not None else None,
                                          json.dumps(opts)))


def helm_render_fails(chart, values_file, expected, api_versions=""):
    """The render must fail, with `expected` in the message (a `required`/`fail`)."""
    try:
        _render(chart, values_file, api_versions)
    except Exception as e:  # HelmRenderError
        need(expected in str(e), f"render failed, but without {expected!r}: {e}")
        print(f"refused as expected: {e}")
        return
    raise CheckError(f"render succeeded; expected a failure naming {expected!r}")


def helm_render(chart, values_file, out, api_versions=""):
    rendered = _render(chart, values_file, api_versions)
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


# ------------------------------------------------------------------ grafana
def _dashboard_exprs(dash):
    """Every PromQL expression of the dashboard: panel targets (rows' nested
    panels too) and the metric of each label_values() variable query."""
    exprs = []

    def walk(panels):
        for p in panels:
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            targets = p.get("targets") or []
            need(targets, f"panel {p.get('title')!r} has no query")
            need(len({t["refId"] for t in targets}) == len(targets), f"panel {p.get('title')!r}: duplicate refId")
            need(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p.get('title')!r}: datasource must be ${{datasource}}")
            for t in targets:
                need(t.get("expr", "").strip(), f"panel {p.get('title')!r}: empty expr")
                exprs.append((p["title"], t["expr"]))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", query)
        need(m, f"variable {v['name']}: only label_values(<PromQL>, <label>) is supported: {query!r}")
        exprs.append((f"variable {v['name']}", m.group(1)))
    return exprs


def dashboard(path, chart_copy, rules_out):
    """Structure of the Grafana dashboard, the chart's copy identical, and a
    rules file with one recording rule per expression (Grafana's $variables
    replaced by PromQL) for `promtool check rules` to parse offline."""
    text = open(path).read()
    dash = json.loads(text)
    need(dash.get("uid") and dash.get("title"), "dashboard needs uid and title")
    need(open(chart_copy).read() == text, f"{chart_copy} is not a copy of {path}")
    exprs = _dashboard_exprs(dash)
    rules = []
    for i, (title, e) in enumerate(exprs):
        e = re.sub(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}", "5m", e)
        e = re.sub(r"\$\{?\w+\}?", ".*", e)
        need("$" not in e, f"{title}: unresolved variable in {e!r}")
        rules.append({"record": f"yatagarasu_dashboard:expr_{i}", "expr": e})
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    names = sorted({n for _, e in exprs for n in re.findall(r"\byatagarasu_[a-z0-9_]+", e)})
    need(names, "the dashboard reads no yatagarasu_ metric")
    print(f"{len(exprs)} expressions, metrics: {' '.join(names)}")


def grafana_configmap(path, dashboard_file):
    """The chart's dashboard ConfigMap: the Grafana sidecar label, the JSON as is."""
    cms = [d for d in by_kind(load_docs(path), "ConfigMap")
           if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    need(len(cms) == 1, f"expected 1 ConfigMap labelled grafana_dashboard: \"1\", got {len(cms)}")
    data = cms[0]["data"]
    need(list(data) == ["yatagarasu.json"], f"data keys {list(data)}")
    need(json.loads(data["yatagarasu.json"]) == json.load(open(dashboard_file)), "ConfigMap JSON differs from the dashboard")
    print(f"ok ConfigMap/{cms[0]['metadata']['name']}")


def no_grafana_configmap(path):
    docs = load_docs(path)
    need(not [d for d in by_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {})],
         "grafanaDashboard.enabled is off by default, yet a dashboard ConfigMap rendered")
    print("no dashboard ConfigMap")


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
    # The proxy port, unless it requires client certificates (mTLS), which the
    # kubelet cannot present: then the metrics port (same /health and /ready).
    mtls = ((cfg_of(docs, pspec, c).get("server") or {}).get("tls") or {}).get("client_ca_file")
    for probe in ("livenessProbe", "readinessProbe"):
        port = c[probe]["httpGet"]["port"]
        if mtls:
            need(port in (9090, "metrics"), f"{probe} must target the metrics port with mTLS on the proxy port")
        else:
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
    if profile in ("helm-ha", "helm-extredis", "base", "kustomize-ha"):
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
    if profile in ("helm-ha", "kustomize-ha", "helm-tls"):
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


def proxy_parts(docs):
    """The proxy Deployment, its container, and its parsed config.yaml."""
    dep = next(d for d in by_kind(docs, "Deployment")
               if any(c["name"] == "yatagarasu" for c in d["spec"]["template"]["spec"]["containers"]))
    pspec = dep["spec"]["template"]["spec"]
    c = next(c for c in pspec["containers"] if c["name"] == "yatagarasu")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vol = next(v for v in pspec["volumes"] if "configMap" in v and mounts.get(v["name"]) == "/etc/yatagarasu")
    cm = next(m for m in by_kind(docs, "ConfigMap") if m["metadata"]["name"] == vol["configMap"]["name"])
    return dep, c, yaml.safe_load(cm["data"]["config.yaml"])


def tls(path):
    """server.tls reads files of a mounted kubernetes.io/tls Secret; probes over HTTPS."""
    docs = load_docs(path)
    dep, c, cfg = proxy_parts(docs)
    t = (cfg.get("server") or {}).get("tls") or {}
    need(t.get("cert_file") and t.get("key_file"), f"server.tls.cert_file/key_file missing: {t}")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    dirs = {m["mountPath"].rstrip("/"): vols[m["name"]] for m in c["volumeMounts"]}
    for key in ("cert_file", "key_file"):
        d, f = os.path.split(t[key])
        need(d in dirs and "secret" in dirs[d], f"server.tls.{key} {t[key]} is not in a mounted Secret")
        need(f in ("tls.crt", "tls.key"), f"server.tls.{key} must be a kubernetes.io/tls key: {f}")
    schemes_of(docs, dep, c, cfg)
    print(f"tls ok: {t['cert_file']} from Secret {dirs[os.path.dirname(t['cert_file'])]['secret']['secretName']}, "
          + ", ".join(f"{p} {c[p]['httpGet'].get('scheme', 'HTTP')} on {c[p]['httpGet']['port']}"
                      for p in ("livenessProbe", "readinessProbe")))


def cfg_of(docs, pspec, c):
    """The parsed config.yaml of the ConfigMap mounted at /etc/yatagarasu."""
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vol = next(v for v in pspec["volumes"] if "configMap" in v and mounts.get(v["name"]) == "/etc/yatagarasu")
    cm = next(m for m in by_kind(docs, "ConfigMap") if m["metadata"]["name"] == vol["configMap"]["name"])
    return yaml.safe_load(cm["data"]["config.yaml"])


def schemes_of(docs, dep, c, cfg):
    """Each probe speaks the scheme of the listener it targets (HTTPS iff that
    listener has TLS: server.tls for the proxy port, metrics.tls for the metrics
    port), and never targets a port that requires client certificates; the
    ServiceMonitor scrapes the metrics port with its scheme."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    server_port = int(str((cfg.get("server") or {}).get("address", "0.0.0.0:8080")).rsplit(":", 1)[1])
    metrics = cfg.get("metrics") or {}
    tls_of = {server_port: (cfg.get("server") or {}).get("tls"), int(metrics.get("port", 9090)): metrics.get("tls")}
    for probe in ("livenessProbe", "readinessProbe"):
        g = c[probe].get("httpGet")
        if not g:
            continue
        port = ports.get(g["port"], g["port"])
        need(port in tls_of, f"{probe}: port {g['port']} is neither the proxy nor the metrics listener")
        t = tls_of[port] or {}
        want = "HTTPS" if t else "HTTP"
        need(g.get("scheme", "HTTP") == want,
             f"{probe}: scheme {g.get('scheme', 'HTTP')} on port {g['port']}, whose listener "
             f"{'has' if t else 'has no'} TLS: must be {want}")
        need(not t.get("client_ca_file"),
             f"{probe}: port {g['port']} requires client certificates (client_ca_file); the kubelet has none")
    for sm in by_kind(docs, "ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            want = "https" if metrics.get("tls") else "http"
            need(ep.get("scheme", "http") == want, f"ServiceMonitor: scheme {ep.get('scheme', 'http')}, metrics port wants {want}")
            need(want == "http" or ep.get("tlsConfig"), "ServiceMonitor: https without tlsConfig")


def schemes(path):
    docs = load_docs(path)
    dep, c, cfg = proxy_parts(docs)
    schemes_of(docs, dep, c, cfg)
    print(", ".join(f"{p}: {c[p]['httpGet'].get('scheme', 'HTTP')} on {c[p]['httpGet']['port']}"
                    for p in ("livenessProbe", "readinessProbe"))
          + "".join(f"; ServiceMonitor {ep.get('scheme', 'http')}" for sm in by_kind(docs, "ServiceMonitor")
                    for ep in sm["spec"]["endpoints"]))


def mtls(path, metrics_scheme):
    """Mutual TLS: server.tls.client_ca_file is a file of a Secret mounted
    read-only; both probes on the metrics port (`metrics_scheme`), which asks
    for no client certificate; the metrics port in the NetworkPolicy."""
    docs = load_docs(path)
    dep, c, cfg = proxy_parts(docs)
    t = (cfg.get("server") or {}).get("tls") or {}
    ca = t.get("client_ca_file")
    need(ca, f"server.tls.client_ca_file missing: {t}")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    d, f = os.path.split(ca)
    mount = next((m for m in c["volumeMounts"] if m["mountPath"].rstrip("/") == d), None)
    need(mount and "secret" in vols[mount["name"]], f"server.tls.client_ca_file {ca} is not in a mounted Secret")
    need(mount.get("readOnly") is True, f"the client CA mount {d} must be readOnly")
    need("subPath" not in mount, "the client CA must be mounted as a directory (a subPath never sees updates)")
    sec = vols[mount["name"]]["secret"]
    items = sec.get("items")
    need(not items or f in [i["path"] for i in items], f"{f} is not among the projected items {items}")
    need(d != os.path.dirname(t.get("cert_file", "")), "client CA and serving certificate in one mount")
    for probe in ("livenessProbe", "readinessProbe"):
        g = c[probe]["httpGet"]
        need(g["port"] in ("metrics", 9090), f"{probe} targets {g['port']}: with mTLS it must be the metrics port")
        need(g.get("scheme", "HTTP") == metrics_scheme, f"{probe}: scheme {g.get('scheme', 'HTTP')} != {metrics_scheme}")
    need(not ((cfg.get("metrics") or {}).get("tls") or {}).get("client_ca_file"), "metrics.tls must not ask for client certificates")
    need(("https" if (cfg.get("metrics") or {}).get("tls") else "http") == metrics_scheme.lower(),
         f"metrics.tls does not match the expected scheme {metrics_scheme}")
    schemes_of(docs, dep, c, cfg)
    print(f"mtls ok: {ca} from Secret {sec['secretName']}, probes {metrics_scheme} on the metrics port")


def netpol(path):
    """A NetworkPolicy selecting the proxy pods: proxy port from allowed peers,
    metrics only from a namespace, egress limited to DNS and listed peers."""
    docs = load_docs(path)
    dep, c, cfg = proxy_parts(docs)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    nps = [n for n in by_kind(docs, "NetworkPolicy") if matches(n["spec"]["podSelector"].get("matchLabels", {}), labels)]
    need(len(nps) == 1, f"expected 1 NetworkPolicy selecting the proxy pods, got {len(nps)}")
    spec = nps[0]["spec"]
    need(set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, "policyTypes must be Ingress and Egress")
    by_port = {}
    for rule in spec.get("ingress", []):
        need(rule.get("from"), "an ingress rule without `from` allows everyone")
        for p in rule.get("ports", []):
            by_port.setdefault(p["port"], []).extend(rule["from"])
    need(by_port.get("http") or by_port.get(8080), "no ingress rule for the proxy port")
    mpeers = by_port.get("metrics") or by_port.get(9090)
    need(mpeers and all(set(p) == {"namespaceSelector"} for p in mpeers),
         "the metrics port must be open to the monitoring namespace only")
    egress = spec.get("egress", [])
    need(any(p.get("port") == 53 and p.get("protocol") == "UDP" for r in egress for p in r.get("ports", [])),
         "egress must allow DNS (53/UDP)")
    need(all(r.get("ports") for r in egress), "an egress rule without ports allows every port")
    print(f"networkpolicy ok: {nps[0]['metadata']['name']}, ingress ports {sorted(map(str, by_port))}, "
          f"{len(egress)} egress rules")


def extredis(path):
    """cache.redis points at an external Cluster/Sentinel set; nothing bundled."""
    docs = load_docs(path)
    dep, c, cfg = proxy_parts(docs)
    r = cfg["cache"]["redis"]
    need(r.get("enabled") is True and r.get("mode") in ("cluster", "sentinel"), f"cache.redis.mode: {r.get('mode')}")
    need(r.get("urls") and "url" not in r, "cluster/sentinel: urls, no url")
    need(r["mode"] != "sentinel" or r.get("sentinel_master"), "sentinel needs sentinel_master")
    need(not [d for d in by_kind(docs, "Deployment") if d is not dep], "no bundled Valkey with an external cache")
    print(f"external {r['mode']}: {len(r['urls'])} nodes")


def no_monitoring(path):
    """Without the Prometheus Operator API the chart skips its objects."""
    kinds = {d["kind"] for d in load_docs(path)}
    need(not kinds & CRD_KINDS, f"rendered {kinds & CRD_KINDS} for a cluster without the CRDs")
    print("ServiceMonitor/PrometheusRule skipped without monitoring.coreos.com/v1")


def layout(path):
    """A layout that can exist: on AWS (no endpoint) a bucket name lives in one
    region only; R2 endpoints sign with region auto."""
    cfg = yaml.safe_load(open(path))
    for b in cfg.get("buckets") or []:
        s3 = b.get("s3") or {}
        reps = s3.get("replicas") or [{"name": "default"}]
        seen = {}
        for r in reps:
            endpoint = r.get("endpoint", s3.get("endpoint"))
            bucket = r.get("bucket", s3.get("bucket"))
            region = r.get("region", s3.get("region", "us-east-1"))
            if endpoint and "r2.cloudflarestorage.com" in str(endpoint):
                need(region == "auto", f"{b['name']}/{r['name']}: R2 needs region auto, has {region}")
            if not endpoint:
                need(seen.setdefault(bucket, region) == region,
                     f"{b['name']}/{r['name']}: AWS bucket {bucket!r} in {region} and {seen[bucket]} (names are global)")
    print(f"{len(cfg.get('buckets') or [])} bucket(s): layouts can exist")


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


def versions(cargo, chart, kustomization, deployment, *compose):
    """Every deploy path runs a build of this code: yatagarasu:<crate version>."""
    import tomllib

    version = tomllib.load(open(cargo, "rb"))["package"]["version"]
    app = yaml.safe_load(open(chart))["appVersion"]
    need(str(app) == version, f"Chart appVersion {app} != crate version {version}")
    k = yaml.safe_load(open(kustomization))
    imgs = {i["name"]: i for i in k.get("images", [])}
    need(imgs.get("yatagarasu", {}).get("newTag") == version, f"kustomize images: {k.get('images')}")
    need(any(c.get("image") == f"yatagarasu:{version}" for d in load_docs(deployment)
             for c in d["spec"]["template"]["spec"]["containers"]), f"{deployment}: image yatagarasu:{version}")
    for f in compose:
        text = open(f).read()
        need(f"${{YATAGARASU_IMAGE:-yatagarasu:{version}}}" in text, f"{f}: default image yatagarasu:{version}")
    print(f"crate, chart appVersion, kustomize and compose: yatagarasu:{version}")


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


# ------------------------------------------------------------------ healthchecks
# `yatagarasu healthcheck` waits this long for an answer unless told otherwise;
# the caller's timeout must be longer, so its one-line reason is what gets recorded.
HEALTHCHECK_DEFAULT_TIMEOUT_S = 5


def _seconds(text):
    m = re.fullmatch(r"\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*", str(text))
    need(m and (m.group(1) or m.group(2)), f"duration {text!r} is not like 30s or 1m30s")
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def _healthcheck_argv(argv, binary, where):
    need(argv[:2] == [binary, "healthcheck"], f"{where}: healthcheck must run [{binary!r}, 'healthcheck', ...], not {argv}")
    timeout = HEALTHCHECK_DEFAULT_TIMEOUT_S
    if "--timeout-seconds" in argv:
        timeout = int(argv[argv.index("--timeout-seconds") + 1])
    return timeout


def dockerfile_healthcheck(path):
    """The image checks itself with its own binary (it has no curl): one HEALTHCHECK
    in the final stage, exec form, naming the binary the image installs and runs."""
    from dockerfile_parse import DockerfileParser

    d = DockerfileParser(path)
    instr = [(i["instruction"], i["value"]) for i in d.structure if i["instruction"] != "COMMENT"]
    last_from = max(i for i, (k, _) in enumerate(instr) if k == "FROM")
    final = instr[last_from:]
    copies = [v.split()[-1] for k, v in final if k == "COPY" and v.startswith("--from=")]
    entry = [json.loads(v)[0] for k, v in final if k == "ENTRYPOINT"]
    need(copies and entry and entry[-1] in copies, f"ENTRYPOINT {entry} is not the binary COPY'd in ({copies})")
    binary = entry[-1]
    hcs = [v for k, v in final if k == "HEALTHCHECK"]
    need(len(hcs) == 1, f"the final stage needs one HEALTHCHECK, has {len(hcs)}")
    m = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])\s*", hcs[0].strip(), re.S)
    need(m, f"HEALTHCHECK must be options then CMD in exec form (no shell in the image): {hcs[0]}")
    opts = dict(o.split("=", 1) for o in m.group(1).split())
    argv = json.loads(m.group(2))
    timeout = _healthcheck_argv(argv, binary, "HEALTHCHECK")
    for opt in ("--interval", "--timeout", "--start-period"):
        need(opt in opts, f"HEALTHCHECK {opt} not set")
    need(_seconds(opts["--timeout"]) > timeout,
         f"HEALTHCHECK --timeout={opts['--timeout']} must exceed the subcommand's own {timeout}s")
    print(f"HEALTHCHECK {' '.join(m.group(1).split())} CMD {argv}")


def compose_healthchecks(path):
    """Every proxy service (the yatagarasu image) has a healthcheck running the
    `healthcheck` subcommand, and every service depending on one waits for it to be healthy."""
    svc = yaml.safe_load(open(path))["services"]
    proxies = [n for n, s in svc.items() if str(s.get("image", "")).split("/")[-1].startswith("yatagarasu:")]
    need(proxies, "no yatagarasu service")
    for n in proxies:
        hc = svc[n].get("healthcheck")
        need(hc and not hc.get("disable"), f"{n}: no healthcheck")
        test = hc.get("test")
        need(isinstance(test, list) and test[:1] == ["CMD"],
             f"{n}: healthcheck.test must be [\"CMD\", ...] (no shell in the image): {test}")
        timeout = _healthcheck_argv(test[1:], "/usr/local/bin/yatagarasu", n)
        need(_seconds(hc.get("timeout", "30s")) > timeout,
             f"{n}: healthcheck timeout {hc.get('timeout')} must exceed the subcommand's own {timeout}s")
        need("start_period" in hc, f"{n}: healthcheck.start_period not set")
    for n, s in svc.items():
        deps = s.get("depends_on") or {}
        for p in proxies:
            if p in deps:
                cond = deps[p].get("condition") if isinstance(deps, dict) else None
                need(cond == "service_healthy", f"{n} depends on {p} without condition: service_healthy")
    # MinIO's images have no curl since RELEASE.2023-11-01 (minio/minio#18389):
    # a curl healthcheck there never passes, and whatever waits for it never starts.
    for n, s in svc.items():
        if str(s.get("image", "")).split(":")[0].endswith("minio/minio"):
            test = (s.get("healthcheck") or {}).get("test") or []
            words = test if isinstance(test, list) else str(test).split()
            need(not any(str(w).endswith("curl") or str(w).endswith("wget") for w in words),
                 f"{n}: the minio/minio image has no curl or wget; use [\"CMD\", \"mc\", \"ready\", \"local\"]: {test}")
    print(f"healthchecks on {', '.join(proxies)}")


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
    # A TLS config names the files of mounted Secrets (/etc/yatagarasu-tls/ and, for mutual
    # TLS, /etc/yatagarasu-client-ca/ca.crt; asserted by the `tls`/`mtls` checks above);
    # `check` reads them, so it gets a throwaway certificate at those paths (a self-signed
    # CA certificate, so that it also loads as the client CA bundle).
    local cfg="$1"
    if grep -qE '/etc/yatagarasu-(tls|client-ca)/' "$cfg"; then
        if [[ ! -f "$WORK/tls/tls.crt" ]]; then
            mkdir -p "$WORK/tls"
            openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
                -addext basicConstraints=critical,CA:TRUE \
                -keyout "$WORK/tls/tls.key" -out "$WORK/tls/tls.crt" >/dev/null 2>&1
            cp "$WORK/tls/tls.crt" "$WORK/tls/ca.crt"
        fi
        cfg="$WORK/tls/$(basename "$1")"
        sed -e "s#/etc/yatagarasu-tls/#$WORK/tls/#g" -e "s#/etc/yatagarasu-client-ca/#$WORK/tls/#g" "$1" >"$cfg"
    fi
    env AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy MINIO_ACCESS_KEY=dummy MINIO_SECRET_KEY=dummy \
        R2_ACCESS_KEY=dummy R2_SECRET_KEY=dummy REDIS_PASSWORD=dummy YATAGARASU_ADMIN_TOKEN=dummy YATAGARASU_LISTING_TOKEN_KEY=dummy-listing-token-key \
        "$BIN" check -c "$cfg"
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

check "Dockerfile HEALTHCHECK runs the image's binary: yatagarasu healthcheck" py dockerfile-healthcheck Dockerfile

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

log "== grafana dashboard"
check "dashboard structure; chart copy identical; one recording rule per query" \
    py dashboard k8s/grafana/yatagarasu-dashboard.json k8s/helm/yatagarasu/files/yatagarasu-dashboard.json "$WORK/dashboard-rules.yaml"
if command -v promtool >/dev/null 2>&1; then
    # Every query (Grafana variables replaced) parsed by promtool; that each
    # metric is exported is checked against the real binary by the
    # integration test every_metric_of_the_grafana_dashboard_is_exported.
    check "promtool parses every dashboard query" promtool check rules "$WORK/dashboard-rules.yaml"
fi

log "== helm chart (helm-python-sdk)"
CHART="${CHART_DIR:-k8s/helm/yatagarasu}"
MONITORING_APIS=monitoring.coreos.com/v1,monitoring.coreos.com/v1/ServiceMonitor,monitoring.coreos.com/v1/PrometheusRule
check "images: crate version = chart appVersion = kustomize = compose (yatagarasu:VERSION)" \
    py versions Cargo.toml $CHART/Chart.yaml k8s/base/kustomization.yaml k8s/base/deployment.yaml \
    compose/ha/docker-compose.yml compose/tutorial/docker-compose.yml
check "no deploy path runs another project's image" \
    bash -c '! grep -rn "julianshen" k8s compose config Dockerfile'
check "helm: default values refuse to install (config.buckets required)" \
    py helm-render-fails $CHART "" "config.buckets is empty"
cat >"$WORK/values-unset-var.yaml" <<'VALUES'
config:
  buckets:
    - name: "a"
      path_prefix: "/a"
      s3: { bucket: "a", region: "us-east-1", access_key: "${AWS_ACCESS_KEY_ID}", secret_key: "${AWS_SECRET_ACCESS_KEY}" }
VALUES
check "helm: a \${VAR} nothing provides refuses to install, naming it" \
    py helm-render-fails $CHART "$WORK/values-unset-var.yaml" "AWS_ACCESS_KEY_ID"
printf 'cache:\n  redis: { enabled: true, mode: cluster }\n' | cat $CHART/ci/minimal-values.yaml - >"$WORK/values-cluster-no-urls.yaml"
check "helm: cache.redis.mode cluster without urls refuses to install" \
    py helm-render-fails $CHART "$WORK/values-cluster-no-urls.yaml" "cache.redis.urls"
# mTLS / metrics TLS that could not work refuse to install, naming the value to set.
printf 'tls:\n  clientCa: { secretName: ca }\n' | cat $CHART/ci/minimal-values.yaml - >"$WORK/values-mtls-no-tls.yaml"
check "helm: tls.clientCa without tls.enabled refuses to install" \
    py helm-render-fails $CHART "$WORK/values-mtls-no-tls.yaml" "tls.clientCa.secretName"
printf 'metrics: { enabled: false }\n' | cat $CHART/ci/mtls-plain-metrics-values.yaml - >"$WORK/values-mtls-no-metrics.yaml"
check "helm: mTLS with metrics.enabled false refuses to install (the probes need the metrics port)" \
    py helm-render-fails $CHART "$WORK/values-mtls-no-metrics.yaml" "keep metrics.enabled on"
printf 'metrics:\n  tls: { enabled: true }\n  serviceMonitor: { enabled: true }\n' |
    cat $CHART/ci/mtls-plain-metrics-values.yaml - >"$WORK/values-metrics-tls-no-smtls.yaml"
check "helm: metrics TLS with a ServiceMonitor but no tlsConfig refuses to install" \
    py helm-render-fails $CHART "$WORK/values-metrics-tls-no-smtls.yaml" "metrics.serviceMonitor.tlsConfig" "$MONITORING_APIS"
# TLS on the proxy port, probes pointed at the (plain) metrics port by the user: HTTP there.
printf 'probes:\n  readiness: { httpGet: { path: /ready, port: metrics } }\n  liveness: { httpGet: { path: /health, port: metrics } }\n' |
    cat $CHART/ci/tls-netpol-values.yaml - >"$WORK/values-tls-probe-metrics.yaml"
# scenario name, values file, Prometheus Operator APIs served, profile checks
HELM_SCENARIOS=(
    "minimal|$CHART/ci/minimal-values.yaml||ha:helm-minimal no-grafana"
    "ha|$CHART/ci/ha-values.yaml|$MONITORING_APIS|ha:helm-ha crds grafana"
    "ha-no-crds|$CHART/ci/ha-values.yaml||no-monitoring"
    "tls-netpol|$CHART/ci/tls-netpol-values.yaml||ha:helm-tls tls netpol"
    "tls-probes-on-metrics|$WORK/values-tls-probe-metrics.yaml||tls"
    "mtls|$CHART/ci/mtls-values.yaml|$MONITORING_APIS|ha:helm-mtls tls mtls:HTTPS netpol crds"
    "mtls-plain-metrics|$CHART/ci/mtls-plain-metrics-values.yaml||ha:helm-mtls tls mtls:HTTP"
    "external-redis|$CHART/ci/external-redis-values.yaml||ha:helm-extredis extredis netpol"
)
HELM_RENDERS=()
for sc in "${HELM_SCENARIOS[@]}"; do
    IFS='|' read -r name values apis props <<<"$sc"
    f="$WORK/helm-$name.yaml"
    [[ $name == ha-no-crds || $name == tls-probes-on-metrics ]] || check "helm lint --strict ($name values)" py helm-lint $CHART "$values"
    check "helm render ($name values${apis:+, Prometheus Operator API served})" py helm-render $CHART "$values" "$f" "$apis"
    [[ -s $f ]] || { fail_now "helm $name render missing" "see above"; continue; }
    HELM_RENDERS+=("helm-$name")
    check "kubernetes-validate --strict: helm $name render" kvalidate "$f"
    check "probe and ServiceMonitor schemes match the listener they target: helm $name render" py schemes "$f"
    for prop in $props; do
        case $prop in
        ha:*) check "HA properties: helm $name render" py ha "$f" "${prop#ha:}" ;;
        crds) check "Prometheus Operator objects: helm $name render" py crds "$f" ;;
        no-monitoring) check "helm $name: ServiceMonitor/PrometheusRule guarded by .Capabilities" py no-monitoring "$f" ;;
        tls) check "TLS from a Secret, each probe's scheme that of the port it targets: helm $name render" py tls "$f" ;;
        mtls:*) check "mutual TLS: client CA from a read-only Secret in server.tls, probes ${prop#mtls:} on the metrics port: helm $name render" py mtls "$f" "${prop#mtls:}" ;;
        netpol) check "NetworkPolicy: helm $name render" py netpol "$f" ;;
        extredis) check "external Valkey Sentinel/Cluster: helm $name render" py extredis "$f" ;;
        grafana) check "Grafana dashboard ConfigMap: helm $name render" py grafana-configmap "$f" k8s/grafana/yatagarasu-dashboard.json ;;
        no-grafana) check "no Grafana dashboard ConfigMap by default: helm $name render" py no-grafana-configmap "$f" ;;
        esac
    done
done

log "== plain manifests (kustomize)"
if command -v kubectl >/dev/null 2>&1; then
    check "kubectl kustomize k8s/base" kustomize_build k8s/base "$WORK/k-base.yaml"
    check "kubectl kustomize k8s/overlays/ha" kustomize_build k8s/overlays/ha "$WORK/k-ha.yaml"
    check "kubectl kustomize k8s/monitoring" kustomize_build k8s/monitoring "$WORK/k-mon.yaml"
    check "kubectl kustomize k8s/overlays/ha-secure (TLS + NetworkPolicy components)" kustomize_build k8s/overlays/ha-secure "$WORK/k-secure.yaml"
    if [[ -s $WORK/k-secure.yaml ]]; then
        check "kubernetes-validate --strict: kustomize ha-secure" kvalidate "$WORK/k-secure.yaml"
        check "HA properties: kustomize ha-secure" py ha "$WORK/k-secure.yaml" kustomize-ha
        check "TLS from a Secret, each probe's scheme that of the port it targets: kustomize ha-secure" py tls "$WORK/k-secure.yaml"
        check "NetworkPolicy: kustomize ha-secure" py netpol "$WORK/k-secure.yaml"
    fi
    check "kubectl kustomize k8s/overlays/ha-mtls (TLS + mTLS + NetworkPolicy components)" kustomize_build k8s/overlays/ha-mtls "$WORK/k-mtls.yaml"
    if [[ -s $WORK/k-mtls.yaml ]]; then
        check "kubernetes-validate --strict: kustomize ha-mtls" kvalidate "$WORK/k-mtls.yaml"
        check "HA properties: kustomize ha-mtls" py ha "$WORK/k-mtls.yaml" kustomize-ha
        check "TLS from a Secret, each probe's scheme that of the port it targets: kustomize ha-mtls" py tls "$WORK/k-mtls.yaml"
        check "mutual TLS: client CA from a read-only Secret in server.tls, probes HTTP on the metrics port: kustomize ha-mtls" \
            py mtls "$WORK/k-mtls.yaml" HTTP
        check "NetworkPolicy: kustomize ha-mtls" py netpol "$WORK/k-mtls.yaml"
    fi
    [[ -s $WORK/k-base.yaml ]] && check "kubernetes-validate --strict: kustomize base" kvalidate "$WORK/k-base.yaml"
    [[ -s $WORK/k-ha.yaml ]] && check "kubernetes-validate --strict: kustomize HA overlay" kvalidate "$WORK/k-ha.yaml"
    [[ -s $WORK/k-mon.yaml ]] && check "Prometheus Operator objects: k8s/monitoring" py crds "$WORK/k-mon.yaml"
    [[ -s $WORK/k-base.yaml ]] && check "base properties: kustomize base" py ha "$WORK/k-base.yaml" base
    [[ -s $WORK/k-ha.yaml ]] && check "HA properties: kustomize HA overlay" py ha "$WORK/k-ha.yaml" kustomize-ha
    for r in k-base k-ha k-secure k-mtls; do
        [[ -s $WORK/$r.yaml ]] && check "probe schemes match the listener they target: kustomize ${r#k-}" py schemes "$WORK/$r.yaml"
    done
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
    check "compose $stack: each proxy service's healthcheck runs yatagarasu healthcheck; dependents wait for healthy; MinIO's without curl" \
        bash -c "docker-compose -f '$f' config > '$WORK/compose-hc-$stack.yaml' && '$PY' '$WORK/checks.py' compose-healthchecks '$WORK/compose-hc-$stack.yaml'"
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
configs+=(config/*.yaml)
mkdir -p "$WORK/rendered-configs"
# Every render's config is checked; a render that is missing or whose config
# cannot be extracted is a failure, never a silently shorter list.
for r in "${HELM_RENDERS[@]}" k-base k-ha k-secure k-mtls; do
    [[ $r == helm-ha-no-crds || $r == helm-tls-probes-on-metrics ]] && continue
    if [[ ! -s $WORK/$r.yaml ]]; then
        fail_now "config of the $r render" "render missing (see its failure above)"
        continue
    fi
    mkdir -p "$WORK/rendered-configs/$r"
    if ! py extract-configs "$WORK/$r.yaml" "$WORK/rendered-configs/$r" >"$WORK/extract-$r.log" 2>&1; then
        fail_now "extract config.yaml from the $r render" "$(tail -n 5 "$WORK/extract-$r.log")"
        continue
    fi
    for c in "$WORK/rendered-configs/$r"/*.yaml; do configs+=("$c"); done
done
for c in "${configs[@]}"; do
    check "layout can exist (global AWS bucket names, R2 region auto): ${c#"$WORK"/}" py layout "$c"
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

log "== healthcheck subcommand ($BIN)"
healthcheck_help() {
    local out
    out=$("$BIN" healthcheck --help) || { echo "$out"; return 1; }
    echo "$out" | head -n 3
    for opt in --config --ready --url --timeout-seconds; do
        grep -q -- "$opt" <<<"$out" || { echo "help does not mention $opt"; return 1; }
    done
}
healthcheck_refused() {
    # Nothing listens on port 1: exit 1 (Docker reserves 2), one line saying why.
    local out rc
    out=$("$BIN" healthcheck --url http://127.0.0.1:1/health 2>&1); rc=$?
    echo "exit $rc: $out"
    [[ $rc -eq 1 ]] || { echo "expected exit 1"; return 1; }
    grep -q "connection refused" <<<"$out" || { echo "no reason given"; return 1; }
}
if [[ ! -x "$BIN" ]]; then
    fail_now "yatagarasu healthcheck" "binary $BIN not built"
else
    check "yatagarasu healthcheck --help runs and names its options" healthcheck_help
    check "yatagarasu healthcheck exits 1 saying why when nothing listens" healthcheck_refused
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
