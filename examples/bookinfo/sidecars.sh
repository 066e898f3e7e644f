#!/usr/bin/env bash
# Bookinfo in sidecar mode: each service its own process, knowing nothing of the mesh, behind
# its own `mesh run` sidecar, and a `mesh run` ingress gateway; all on 127.0.0.1.
#
#   examples/bookinfo/sidecars.sh [SCENARIO]      # then open http://127.0.0.1:8080/productpage
#
#   browser ─► mesh run --gateway default/bookinfo-gateway (127.0.0.1:$GATEWAY_PORT)
#     ══mTLS══► productpage's sidecar (--inbound) ─► bookinfo serve --service productpage
#                 calls http://reviews:9080/... through its HTTP proxy, the sidecar's --outbound
#     ══mTLS══► reviews' sidecar (--inbound) ─► bookinfo serve --service reviews --version v2
#                 ... and so on to ratings
#
# The registry is YAML: the Kubernetes Services of config/services.yaml select WorkloadEntries
# (written below) at each sidecar's inbound port, labelled `security.istio.io/tlsMode: istio`
# with the workload's service account, so that the sidecars talk mTLS (Istio's auto mTLS) with
# certificates from a development CA (`mesh ca`). Every proxy watches the config folder: copy a
# scenario into it and the next request follows it.
#
# Environment:
#   GATEWAY_PORT  the ingress gateway's port (default 8080)
#   PORT_BASE     first of the 61 ports the workloads use (default 19000): workload i (in the
#                 order printed at start) has its app on PORT_BASE+10i, its sidecar's inbound
#                 on +1, outbound on +2 and admin on +3; the gateway's admin is PORT_BASE+60
#   WORK_DIR      where the CA, identities, config and logs go (default $TMPDIR/bookinfo-sidecars)
#   MESH, BOOKINFO  use these binaries instead of building them (cargo build --release)
# Stop with Ctrl-C (or SIGTERM): every process it started is stopped.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
PORT_BASE="${PORT_BASE:-19000}"
WORK_DIR="${WORK_DIR:-${TMPDIR:-/tmp}/bookinfo-sidecars}"
scenario="${1:-}"

die() {
  echo "sidecars.sh: $*" >&2
  exit 1
}

case "$scenario" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
if [ -n "$scenario" ] && [ ! -f "$here/scenarios/$scenario.yaml" ]; then
  die "there is no scenario \"$scenario\"; the scenarios are: $(cd "$here/scenarios" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"
fi
for port in "$GATEWAY_PORT" "$PORT_BASE"; do
  case "$port" in
    '' | *[!0-9]*) die "ports must be numbers, got \"$port\"" ;;
  esac
done
[ "$PORT_BASE" -ge 1024 ] && [ "$PORT_BASE" -le 65470 ] || die "PORT_BASE must be between 1024 and 65470"

# --- the binaries ---
if [ -z "${MESH:-}" ] || [ -z "${BOOKINFO:-}" ]; then
  echo "Building mesh and bookinfo (cargo build --release)..."
  (cd "$root" && cargo build --release -q -p mesh-proxy -p bookinfo)
  target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  MESH="${MESH:-$target/release/mesh}"
  BOOKINFO="${BOOKINFO:-$target/release/bookinfo}"
fi
[ -x "$MESH" ] || die "no mesh binary at $MESH"
[ -x "$BOOKINFO" ] || die "no bookinfo binary at $BOOKINFO"

# --- the workloads: app version port-offset ---
workloads=(
  "productpage v1 0"
  "details v1 10"
  "reviews v1 20"
  "reviews v2 30"
  "reviews v3 40"
  "ratings v1 50"
)
gateway_admin=$((PORT_BASE + 60))

# --- identities: a development CA, one certificate per service account ---
rm -rf "$WORK_DIR/ca" "$WORK_DIR/identities" "$WORK_DIR/config" "$WORK_DIR/logs"
mkdir -p "$WORK_DIR/identities" "$WORK_DIR/config" "$WORK_DIR/logs"
"$MESH" ca init --dir "$WORK_DIR/ca" >/dev/null
for app in productpage details reviews ratings; do
  "$MESH" ca issue --dir "$WORK_DIR/ca" --namespace default --service-account "bookinfo-$app" \
    --out "$WORK_DIR/identities/bookinfo-$app" >/dev/null
done
# The ingress gateway's identity, as Istio's default one.
"$MESH" ca issue --dir "$WORK_DIR/ca" --namespace istio-system \
  --service-account istio-ingressgateway-service-account \
  --out "$WORK_DIR/identities/istio-ingressgateway" >/dev/null

# --- the config: Services, gateway, subsets, and the registry of workloads ---
config="$WORK_DIR/config"
cp "$here/config/services.yaml" "$here/config/destination-rules.yaml" "$config/"
sed "s/number: 8080/number: $GATEWAY_PORT/" "$here/config/gateway.yaml" >"$config/gateway.yaml"
{
  echo "# The registry: one WorkloadEntry per workload, at its sidecar's inbound port. The Services"
  echo "# of services.yaml select them by label; tlsMode istio tells clients to use mTLS."
  first=1
  for w in "${workloads[@]}"; do
    read -r app version offset <<<"$w"
    [ "$first" = 1 ] || echo "---"
    first=0
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: $app-$version
  namespace: default
spec:
  address: 127.0.0.1
  ports:
    http: $((PORT_BASE + offset + 1))
  labels:
    app: $app
    version: $version
    security.istio.io/tlsMode: istio
  serviceAccount: bookinfo-$app
EOF
  done
} >"$config/workloads.yaml"
if [ -n "$scenario" ]; then
  cp "$here/scenarios/$scenario.yaml" "$config/scenario.yaml"
fi
if ! "$MESH" validate "$config" >"$WORK_DIR/logs/validate.log" 2>&1; then
  cat "$WORK_DIR/logs/validate.log" >&2
  die "the config in $config does not load"
fi

# --- start: apps, their sidecars, the gateway ---
pids=()
names=()
stop() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    echo
    echo "Stopping ${#pids[@]} processes..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "Stopped. Logs: $WORK_DIR/logs"
}
trap 'stop; exit 0' INT TERM
trap 'stop' EXIT

start() { # name log command...
  local name="$1" log="$2"
  shift 2
  "$@" >"$log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# Waits (10 s at most) until every log has its ready line; names a process that died.
wait_ready() {
  local i
  for i in "${!pids[@]}"; do
    local log="$WORK_DIR/logs/${names[$i]}.log" n=0
    until grep -q -e '^bookinfo serve: .* listening on' -e '^mesh run: ready:' "$log" 2>/dev/null; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        tail -n 20 "$log" >&2
        die "${names[$i]} stopped during start (log above, in $log)"
      fi
      n=$((n + 1))
      [ "$n" -le 100 ] || die "${names[$i]} not ready after 10 s; see $log"
      sleep 0.1
    done
  done
}

for w in "${workloads[@]}"; do
  read -r app version offset <<<"$w"
  app_port=$((PORT_BASE + offset))
  proxy=()
  if [ "$app" = productpage ] || [ "$app" = reviews ]; then
    proxy=(--upstream-proxy "http://127.0.0.1:$((app_port + 2))")
  fi
  start "$app-$version" "$WORK_DIR/logs/$app-$version.log" \
    "$BOOKINFO" serve --service "$app" --version "$version" \
    --listen "127.0.0.1:$app_port" "${proxy[@]}"
done
for w in "${workloads[@]}"; do
  read -r app version offset <<<"$w"
  app_port=$((PORT_BASE + offset))
  outbound=()
  if [ "$app" = productpage ] || [ "$app" = reviews ]; then
    outbound=(--outbound "127.0.0.1:$((app_port + 2))")
  fi
  start "$app-$version-sidecar" "$WORK_DIR/logs/$app-$version-sidecar.log" \
    "$MESH" run --config "$config" \
    --inbound "127.0.0.1:$((app_port + 1))" --app "127.0.0.1:$app_port" "${outbound[@]}" \
    --admin "127.0.0.1:$((app_port + 3))" \
    --workload-labels "app=$app,version=$version" --service-account "bookinfo-$app" \
    --identity-dir "$WORK_DIR/identities/bookinfo-$app" --concurrency 1
done
# The gateway's certificate is for istio-system, its config namespace is default (where the
# Gateway is): mesh run warns about the difference, which is intended here.
start "istio-ingressgateway" "$WORK_DIR/logs/istio-ingressgateway.log" \
  "$MESH" run --config "$config" \
  --gateway default/bookinfo-gateway --gateway-bind 127.0.0.1 \
  --admin "127.0.0.1:$gateway_admin" \
  --workload-labels "istio=ingressgateway,app=istio-ingressgateway" \
  --service-account istio-ingressgateway-service-account \
  --identity-dir "$WORK_DIR/identities/istio-ingressgateway" --concurrency 1
wait_ready

cat <<EOF

Bookinfo is running in sidecar mode: ${#pids[@]} processes, each service behind its own mesh run.

  Open http://127.0.0.1:$GATEWAY_PORT/productpage
  (sign in as "jason" for the user-based scenarios; any password)

  Scenario: ${scenario:-none (no routing rules: reviews spread over v1, v2 and v3)}
  Config folder (watched by every proxy): $config

  workload        app (plain)      sidecar inbound (mTLS)  outbound (HTTP proxy)  admin
EOF
for w in "${workloads[@]}"; do
  read -r app version offset <<<"$w"
  p=$((PORT_BASE + offset))
  out="-"
  if [ "$app" = productpage ] || [ "$app" = reviews ]; then out="127.0.0.1:$((p + 2))"; fi
  printf '  %-15s %-16s %-23s %-22s %s\n' "$app-$version" "127.0.0.1:$p" "127.0.0.1:$((p + 1))" "$out" "127.0.0.1:$((p + 3))"
done
printf '  %-15s %-16s %-23s %-22s %s\n' "gateway" "-" "127.0.0.1:$GATEWAY_PORT (plain)" "-" "127.0.0.1:$gateway_admin"
cat <<EOF

Switch scenario while it runs (every proxy reloads the folder):
  cp $here/scenarios/jason-v2.yaml $config/scenario.yaml
  rm $config/scenario.yaml
Call a service from inside the mesh, through productpage's sidecar:
  curl -x http://127.0.0.1:$((PORT_BASE + 2)) http://ratings:9080/ratings/0
Logs: $WORK_DIR/logs (one per process; the apps log each request)

Press Ctrl-C to stop.
EOF

# Until Ctrl-C, or until one of them stops on its own.
set +e
wait -n "${pids[@]}"
code=$?
set -e
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "sidecars.sh: ${names[$i]} stopped (exit $code); see $WORK_DIR/logs/${names[$i]}.log" >&2
  fi
done
exit 1
