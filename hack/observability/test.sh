#!/usr/bin/env bash
# `make observability-test`: the chart's alerts and Grafana dashboard, checked against the real binaries.
#
#   1. builds promtool and edgewire-promcheck from the Go module proxy (tools.sh; cached, < 1 s when built);
#   2. renders the chart with helm (default values, PrometheusRule and dashboard on, release namespace
#      edgewire-system: what a user installs) and takes the rule groups and the dashboard JSON out of it;
#   3. `promtool check rules`, then `promtool test rules` with alerts_test.yaml (every alert fires in one
#      case and stays quiet in another);
#   4. runs the binaries against real brokers on loopback and saves their /metrics (the e2e example
#      scrape-metrics: publisher, bridge, mqtt-sidecar, and the operator without an API server) plus the
#      operator's registry after one reconcile and one error per kind (the operator example
#      metrics-exposition; why in its header);
#   5. edgewire-promcheck: every PromQL expression of the rules and the dashboard parses, every metric name
#      in them is a series of those scrapes, every alert has its runbook section and its test cases;
#   6. self-tests: a scrape with one metric renamed must fail step 5 naming it, and a changed threshold
#      must fail step 3.
#
# Needs go, helm (make deps), python3 with pyyaml, cargo, nats-server and mosquitto (make deps).
# Prints one line per check and ends with `observability: N passed, M failed`; exits non-zero on a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/hack/observability"
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
HELM="$TOOLS/helm"
CHART="$ROOT/charts/edgewire"
CARGO="${CARGO:-cargo}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac

[ -x "$HELM" ] || { echo "observability: helm not found in $TOOLS: run make deps" >&2; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "observability: python3 module yaml missing: run make deps" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
check() { # check NAME CMD...: runs CMD, its output shown only on failure
  local name="$1" log="$WORK/check.log" rc=0
  shift
  (set -euo pipefail; "$@") >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     | /' "$log"
  fi
}

# --- tools, binaries ----------------------------------------------------------------------------
BIN="$(bash "$HERE/tools.sh")"
PROMTOOL="$BIN/promtool"
PROMCHECK="$BIN/edgewire-promcheck"
# The workspace's binaries and examples, with the features `cargo test --workspace` builds them with.
"$CARGO" build -q --workspace --bins --examples

# --- render -------------------------------------------------------------------------------------
render() { # render OUT_DIR HELM_ARGS...: rules.yaml and dashboard.json of the chart rendered with ARGS
  local out="$1"
  shift
  mkdir -p "$out"
  "$HELM" template edgewire "$CHART" --namespace edgewire-system \
    --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true "$@" >"$out/chart.yaml"
  python3 - "$out" <<'PY'
import json, sys, yaml
out = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{out}/chart.yaml")) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
maps = [d for d in docs if d["kind"] == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
assert len(rules) == 1, f"want one PrometheusRule, got {len(rules)}"
assert len(maps) == 1, f"want one ConfigMap labelled grafana_dashboard: \"1\", got {len(maps)}"
with open(f"{out}/rules.yaml", "w") as f:
    yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
(name, body), = maps[0]["data"].items()
json.loads(body)
with open(f"{out}/dashboard.json", "w") as f:
    f.write(body)
PY
  cp "$HERE/alerts_test.yaml" "$out/"
}
check "helm template: one PrometheusRule, one dashboard ConfigMap (default values)" render "$WORK/default"
dashboard_is_the_file() {
  diff <(python3 -m json.tool "$WORK/default/dashboard.json") <(python3 -m json.tool "$CHART/dashboards/edgewire.json")
}
check "the dashboard ConfigMap holds charts/edgewire/dashboards/edgewire.json" dashboard_is_the_file

# --- promtool -----------------------------------------------------------------------------------
check "promtool check rules" "$PROMTOOL" check rules "$WORK/default/rules.yaml"
check "promtool test rules (alerts_test.yaml: every alert firing and quiet)" \
  "$PROMTOOL" test rules "$WORK/default/alerts_test.yaml"
threshold_change_fails_the_tests() {
  render "$WORK/changed" --set metrics.prometheusRule.bridge.spoolFillingRatio=0.9
  if "$PROMTOOL" test rules "$WORK/changed/alerts_test.yaml"; then
    echo "the rule tests passed with spoolFillingRatio 0.9 (they expect 0.75)"
    return 1
  fi
}
check "promtool test rules fails when a threshold changes (self-test)" threshold_change_fails_the_tests

# --- real /metrics ------------------------------------------------------------------------------
SCRAPES="$WORK/scrapes"
scrape() {
  "$TARGET/debug/examples/scrape-metrics" "$SCRAPES"
  "$TARGET/debug/examples/metrics-exposition" >"$SCRAPES/operator-registry.prom"
  echo "application/openmetrics-text; version=1.0.0; charset=utf-8" >"$SCRAPES/operator-registry.prom.content-type"
  wc -l "$SCRAPES"/*.prom
}
check "scrape /metrics of publisher, bridge, mqtt-sidecar, operator (real brokers) and the operator registry" scrape

promcheck() { # promcheck DASHBOARD_AND_RULES_DIR SCRAPES...
  local dir="$1"
  shift
  "$PROMCHECK" -rules "$dir/rules.yaml" -dashboard "$dir/dashboard.json" -rule-tests "$dir/alerts_test.yaml" \
    -runbooks "$ROOT/docs/runbooks.md" "$@"
}
check "edgewire-promcheck: every metric in the rules and the dashboard is exported; runbooks; test cases" \
  promcheck "$WORK/default" "$SCRAPES"/*.prom
renamed_metric_fails() {
  mkdir -p "$WORK/renamed"
  cp "$SCRAPES"/* "$WORK/renamed/"
  sed -i 's/^edgewire_bridge_spool_dropped_total/edgewire_bridge_spool_drops_total/' "$WORK/renamed/bridge.prom"
  ! cmp -s "$SCRAPES/bridge.prom" "$WORK/renamed/bridge.prom" || { echo "sed renamed nothing"; return 1; }
  local out
  if out="$(promcheck "$WORK/default" "$WORK/renamed"/*.prom)"; then
    echo "$out"
    echo "promcheck passed with edgewire_bridge_spool_dropped_total renamed"
    return 1
  fi
  echo "$out"
  grep -q "FAIL edgewire_bridge_spool_dropped_total is used by" <<<"$out"
}
check "edgewire-promcheck fails, naming it, when a metric is renamed (self-test)" renamed_metric_fails

echo "observability: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
