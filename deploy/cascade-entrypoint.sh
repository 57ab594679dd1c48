#!/usr/bin/env bash
# Starts `cascade` after checking that what it needs is there, for the container image, the
# systemd unit and PM2 alike:
#
#   cascade-entrypoint.sh serve [cascade serve flags...]   check, then exec `cascade serve ...`
#   cascade-entrypoint.sh preflight [cascade serve flags...]  only the check (exit 0 or 78)
#   cascade-entrypoint.sh healthcheck                       GET $CASCADE_HEALTH_URL (/healthz)
#   cascade-entrypoint.sh check|infer|eval|... [flags]       any other cascade command, as is
#   cascade-entrypoint.sh COMMAND [args]                     anything else: exec it (a shell)
#
# The check reads the same flags `cascade serve` does (--policies, --components) and the same
# environment (ORT_DYLIB_PATH, CASCADE_COMPONENTS); the binary is $CASCADE_BIN, else `cascade`
# on PATH, else target/release/cascade of the checkout this script is in. It looks for:
#   - the ONNX Runtime library (ORT_DYLIB_PATH, else <bin dir>/../ort/libonnxruntime.so)
#   - the policies folder, its models.toml and at least one hotkey file
#   - the components folder (CASCADE_COMPONENTS, else <bin dir>/../components) with *.wasm
#   - every file models.toml names (file, head, labels_file, ocr rec/cls) for each model not
#     marked `optional = true`, relative to the policies folder as the server resolves them.
# Anything missing is printed, one line each with what to do, and the script exits 78
# (EX_CONFIG): a restart cannot fix it, so the supervisors are told not to restart on 78
# (systemd RestartPreventExitStatus=78, PM2 stop_exit_codes, compose restart: on-failure:5).
# The server itself still validates everything (contracts, schemas, smoke tests) at start.
set -uo pipefail

EX_CONFIG=78
me=cascade-entrypoint
say() { printf '%s: %s\n' "$me" "$*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

find_bin() {
  if [ -n "${CASCADE_BIN:-}" ]; then
    printf '%s\n' "$CASCADE_BIN"
  elif command -v cascade >/dev/null 2>&1; then
    command -v cascade
  else
    printf '%s\n' "$here/../target/release/cascade"
  fi
}

# healthcheck: what the image's HEALTHCHECK runs; 0 when /healthz answers 200.
healthcheck() {
  local url=${CASCADE_HEALTH_URL:-http://127.0.0.1:8091/healthz}
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 4 -o /dev/null "$url"
    return
  fi
  # no curl: plain HTTP over bash's /dev/tcp (http://HOST:PORT/PATH only)
  local rest=${url#http://} hostport path host port status
  hostport=${rest%%/*}
  path=/${rest#*/}
  [ "$path" = "/$rest" ] && path=/
  host=${hostport%:*}
  port=${hostport##*:}
  [ "$port" = "$hostport" ] && port=80
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hostport" >&3
  IFS=' ' read -r -t 4 _ status _ <&3 || return 1
  exec 3<&-
  [ "$status" = 200 ]
}

# Prints one `MODEL<TAB>KEY<TAB>PATH` line per file a non-optional [[model]] of models.toml
# names. Plain POSIX awk (mawk in slim images): the registry's own format, one key per line,
# inline tables for ocr = { rec, cls }.
model_files() {
  awk '
    function flush(   i) {
      if (inmodel && !optional) for (i = 1; i <= n; i++) print name "\t" keys[i] "\t" vals[i]
      n = 0; name = "?"; optional = 0
    }
    /^[ \t]*#/ { next }
    /^[ \t]*\[\[model\]\][ \t]*(#.*)?$/ { flush(); inmodel = 1; next }
    /^[ \t]*\[\[?model\./ { next }                      # a sub-table of the same model
    /^[ \t]*\[/ { flush(); inmodel = 0; next }         # any other table ends the model
    inmodel {
      line = $0
      if (line ~ /^[ \t]*name[ \t]*=[ \t]*"/) { v = line; sub(/^[^"]*"/, "", v); sub(/".*$/, "", v); name = v }
      if (line ~ /^[ \t]*optional[ \t]*=[ \t]*true/) optional = 1
      rest = line
      while (match(rest, /(^|[ \t{,])(file|head|labels_file|rec|cls)[ \t]*=[ \t]*"[^"]*"/)) {
        m = substr(rest, RSTART, RLENGTH)
        rest = substr(rest, RSTART + RLENGTH)
        sub(/^[ \t{,]/, "", m)
        k = m; sub(/[ \t]*=.*$/, "", k)
        v = m; sub(/^[^"]*"/, "", v); sub(/"$/, "", v)
        n++; keys[n] = k; vals[n] = v
      }
    }
    END { flush() }
  ' "$1"
}

# preflight ARGS...: the checks above for `cascade serve ARGS...`; 0 or 78.
preflight() {
  local policies=policies components=${CASCADE_COMPONENTS:-} arg bin bindir ort
  while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
      --policies) policies=${1:-}; shift ;;
      --policies=*) policies=${arg#*=} ;;
      --components) components=${1:-}; shift ;;
      --components=*) components=${arg#*=} ;;
    esac
  done
  bin=$(find_bin)
  bindir=$(dirname "$bin")
  ort=${ORT_DYLIB_PATH:-$bindir/../ort/libonnxruntime.so}
  [ -n "$components" ] || components=$bindir/../components

  local -a missing=()
  miss() { missing+=("$1"); }

  if [ ! -x "$bin" ]; then
    miss "the cascade binary: $bin (run \`make setup\`, or set CASCADE_BIN)"
  fi
  if [ ! -s "$ort" ]; then
    miss "the ONNX Runtime library: $ort (run \`make setup\`, or set ORT_DYLIB_PATH to libonnxruntime.so)"
  fi
  if ! compgen -G "$components/*.wasm" >/dev/null; then
    miss "policy components (*.wasm) in $components (run \`make setup\`, or pass --components / set CASCADE_COMPONENTS)"
  fi
  if [ ! -d "$policies" ]; then
    miss "the policies folder: $policies (mount it, or pass --policies)"
  else
    local registry=$policies/models.toml hotkeys=0 f
    for f in "$policies"/*.toml; do
      [ -f "$f" ] || continue
      case "$(basename "$f")" in models.toml | chain.toml) ;; *) hotkeys=$((hotkeys + 1)) ;; esac
    done
    [ "$hotkeys" -gt 0 ] || miss "hotkey files (*.toml besides models.toml and chain.toml) in $policies"
    if [ ! -f "$registry" ]; then
      miss "the model registry: $registry"
    elif [ ! -r "$registry" ]; then
      miss "read access to $registry (running as uid $(id -u))"
    else
      local model key path full hint
      while IFS=$'\t' read -r model key path; do
        [ -n "$path" ] || continue
        case "$path" in /*) full=$path ;; *) full=$policies/$path ;; esac
        full=$(realpath -m -- "$full" 2>/dev/null || printf '%s' "$full")
        if [ ! -f "$full" ]; then
          case "$key" in
            head | labels_file) hint="it belongs in the policies folder" ;;
            *) hint="build the default models with \`make setup\`, or mount the folder that holds them" ;;
          esac
          miss "model \"$model\" $key: $full (named in $registry; $hint)"
        elif [ ! -r "$full" ]; then
          miss "read access to model \"$model\" $key: $full (running as uid $(id -u))"
        fi
      done < <(model_files "$registry")
    fi
    # not fatal: what writes into the policies folder (rollout state, metagraph snapshot)
    if [ ! -w "$policies" ]; then
      say "warning: $policies is not writable by uid $(id -u): rollout decisions (<hotkey>.state.json) will not persist"
    fi
    if grep -qs '^[[:space:]]*ss58[[:space:]]*=' "$policies"/*.toml && [ -f "$policies/chain.toml" ] &&
      [ ! -f "$policies/metagraph.json" ]; then
      say "warning: no $policies/metagraph.json yet: axon callers are admitted from allow lists only until the metagraph sync writes it"
    fi
  fi

  if [ ${#missing[@]} -gt 0 ]; then
    say "cannot start: ${#missing[@]} thing(s) missing"
    local m
    for m in "${missing[@]}"; do
      printf '  missing: %s\n' "$m" >&2
    done
    say "exit $EX_CONFIG (EX_CONFIG): a restart will not fix this; fix the files, then start again"
    return $EX_CONFIG
  fi
  say "preflight ok: policies $policies, components $components, ONNX Runtime $ort"
  return 0
}

cmd=${1:-serve}
[ $# -gt 0 ] && shift
case "$cmd" in
  healthcheck)
    healthcheck
    exit
    ;;
  preflight)
    preflight "$@"
    exit
    ;;
  serve)
    preflight "$@" || exit
    exec "$(find_bin)" serve "$@"
    ;;
  check | infer | eval | train-head | help | --help | -h | --version | -V)
    exec "$(find_bin)" "$cmd" "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
