#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/cascade.json, the provisioned Grafana dashboard.

    python3 deploy/grafana/make_dashboard.py            # write it
    python3 deploy/grafana/make_dashboard.py --check    # exit 1 if the file differs

Edit the panels here, not in the JSON (scripts/deploy_checks.sh runs --check). Variables:
$ds (the Prometheus data source), $instance, $hotkey, $arm. Every query names only families
of deploy/metric_families.txt (deploy/check_metric_names.py).
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "cascade.json"
DS = {"type": "prometheus", "uid": "${ds}"}
RI = "$__rate_interval"
I = 'instance=~"$instance"'
HK = f'{I}, hotkey=~"$hotkey"'


class Layout:
    """Rows of panels, 24 units wide, in reading order."""

    def __init__(self):
        self.panels, self.y, self.x, self.row_h, self.next_id = [], 0, 0, 0, 1

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        self._newline()
        self.panels.append({
            "type": "row", "id": self._id(), "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
        })
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def add(self, panel, w=8, h=8):
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def targets(*queries):
    out = []
    for n, q in enumerate(queries):
        expr, legend = q if isinstance(q, tuple) else (q, "")
        out.append({"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                    "range": True, "refId": chr(ord("A") + n)})
    return out


def timeseries(title, description, *queries, unit="short", stack=False, bars=False, minimum=0,
               maximum=None, thresholds=None):
    defaults = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 60 if bars else (25 if stack else 8),
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line+area" if thresholds else "off"},
        },
        "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets(*queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title, description, query, unit="short", thresholds=None, mappings=None):
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets(query),
        "fieldConfig": {"defaults": {
            "unit": unit, "mappings": mappings or [],
            "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
        }, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                    "textMode": "auto", "orientation": "auto"},
    }


def steps(*pairs):
    return [{"color": c, "value": v} for v, c in pairs]


def build():
    L = Layout()

    L.row("Health")
    L.add(stat("Up", "Prometheus reaches /metrics (0: down, exit 78, or loading).",
               f'up{{job="cascade", {I}}}',
               thresholds=steps((None, "red"), (1, "green")),
               mappings=[{"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}]), w=4, h=4)
    L.add(stat("Answers / s", "All hotkeys selected.",
               f"sum(rate(cascade_requests_total{{{HK}}}[{RI}]))", unit="reqps"), w=4, h=4)
    L.add(stat("Not the policy's own", "Share of fallback, partial and failed answers.",
               f'(sum(rate(cascade_requests_total{{{HK}, outcome=~"fallback|partial|failed"}}[{RI}])) or vector(0))'
               f" / sum(rate(cascade_requests_total{{{HK}}}[{RI}]))",
               unit="percentunit", thresholds=steps((None, "green"), (0.05, "orange"), (0.25, "red"))), w=4, h=4)
    L.add(stat("p95 latency", "Validators time out at 9 s.",
               f"histogram_quantile(0.95, sum by (le) (rate(cascade_request_duration_seconds_bucket{{{HK}}}[{RI}])))",
               unit="s", thresholds=steps((None, "green"), (5, "orange"), (8, "red"))), w=4, h=4)
    L.add(stat("Metagraph age", "Seconds since the loaded snapshot was taken (stale past an hour).",
               f"cascade_metagraph_age_seconds{{{I}}}", unit="s",
               thresholds=steps((None, "green"), (1800, "orange"), (3600, "red"))), w=4, h=4)
    L.add(stat("Refused changes (range)", "Changed files refused in the time range: GET /admin/status says why.",
               f"sum(increase(cascade_refused_changes_total{{{I}}}[$__range]))",
               thresholds=steps((None, "green"), (1, "orange"))), w=4, h=4)

    L.row("Answers")
    L.add(timeseries("Answers by stage and outcome", "Requests answered per second, by the stage that answered and how.",
                     (f"sum by (stage, outcome) (rate(cascade_requests_total{{{HK}}}[{RI}]))", "{{stage}} {{outcome}}"),
                     unit="reqps", stack=True), w=12)
    L.add(timeseries("Exit share per stage", "Of each hotkey's answers, the share each stage gave (early exits).",
                     (f"sum by (hotkey, stage) (rate(cascade_requests_total{{{HK}}}[{RI}]))"
                      f" / on (hotkey) group_left sum by (hotkey) (rate(cascade_requests_total{{{HK}}}[{RI}]))",
                      "{{hotkey}} {{stage}}"),
                     unit="percentunit", stack=True, maximum=1), w=12)
    L.add(timeseries("Latency p50 / p95 / p99", "From cascade_request_duration_seconds (buckets up to 9 s).",
                     (f"histogram_quantile(0.5, sum by (le) (rate(cascade_request_duration_seconds_bucket{{{HK}}}[{RI}])))", "p50"),
                     (f"histogram_quantile(0.95, sum by (le) (rate(cascade_request_duration_seconds_bucket{{{HK}}}[{RI}])))", "p95"),
                     (f"histogram_quantile(0.99, sum by (le) (rate(cascade_request_duration_seconds_bucket{{{HK}}}[{RI}])))", "p99"),
                     unit="s", thresholds=steps((None, "transparent"), (5, "orange"), (9, "red"))), w=8)
    L.add(timeseries("Latency p95 by hotkey", "",
                     (f"histogram_quantile(0.95, sum by (hotkey, le) (rate(cascade_request_duration_seconds_bucket{{{HK}}}[{RI}])))",
                      "{{hotkey}}"),
                     unit="s"), w=8)
    L.add(timeseries("Fallbacks, partial answers, component events",
                     "Why policies failed: fallbacks by reason, partial answers by the models that scored, component traps and limits.",
                     (f"sum by (hotkey, reason) (rate(cascade_fallbacks_total{{{HK}}}[{RI}]))", "fallback {{hotkey}} {{reason}}"),
                     (f"sum by (hotkey) (rate(cascade_partial_answers_total{{{HK}}}[{RI}]))", "partial {{hotkey}}"),
                     (f"sum by (hotkey, role, kind) (rate(cascade_component_events_total{{{HK}}}[{RI}]))",
                      "{{hotkey}} {{role}} {{kind}}"),
                     unit="reqps"), w=8)

    L.row("Rollouts")
    L.add(timeseries("Requests per arm", "Stable and candidate arms ($arm), by outcome.",
                     (f'sum by (hotkey, arm, outcome) (rate(cascade_arm_requests_total{{{HK}, arm=~"$arm"}}[{RI}]))',
                      "{{hotkey}} {{arm}} {{outcome}}"),
                     unit="reqps"), w=8)
    L.add(timeseries("Shadow copies", "Candidate answers in shadow mode: agree, disagree, skipped, failed.",
                     (f"sum by (hotkey, result) (rate(cascade_shadow_total{{{HK}}}[{RI}]))", "{{hotkey}} {{result}}"),
                     unit="reqps", stack=True), w=8)
    L.add(timeseries("Rollout events", "Promotions, rollbacks and canary steps.",
                     (f"sum by (hotkey, event) (increase(cascade_rollout_events_total{{{HK}}}[{RI}]))", "{{hotkey}} {{event}}"),
                     bars=True), w=8)

    L.row("Models")
    L.add(timeseries("Model busy time", "Seconds of session runs per second (1 = one worker always busy).",
                     (f"sum by (model) (rate(cascade_model_busy_seconds_total{{{I}}}[{RI}]))", "{{model}}"),
                     unit="percentunit"), w=8)
    L.add(timeseries("Mean batch size", "Images per session run.",
                     (f"sum by (model) (rate(cascade_model_items_total{{{I}}}[{RI}]))"
                      f" / sum by (model) (rate(cascade_model_runs_total{{{I}}}[{RI}]))", "{{model}}")), w=8)
    L.add(timeseries("Images per second", "",
                     (f"sum by (model) (rate(cascade_model_items_total{{{I}}}[{RI}]))", "{{model}}"),
                     unit="ops"), w=8)
    L.add(timeseries("Stage cache hit rate", "Hits over all look-ups (hit, miss, wait) per model.",
                     (f'sum by (model) (rate(cascade_stage_cache_total{{{I}, result="hit"}}[{RI}]))'
                      f" / sum by (model) (rate(cascade_stage_cache_total{{{I}}}[{RI}]))", "{{model}}"),
                     unit="percentunit", maximum=1), w=8)
    L.add(timeseries("Queue depth", "Items waiting per model.",
                     (f"max by (model) (cascade_model_queue_depth{{{I}}})", "{{model}}")), w=8)
    L.add(timeseries("Failures and expiries", "Items whose run failed, and items dropped past their deadline.",
                     (f"sum by (model) (rate(cascade_model_failures_total{{{I}}}[{RI}]))", "failed {{model}}"),
                     (f"sum by (model) (rate(cascade_model_expired_total{{{I}}}[{RI}]))", "expired {{model}}"),
                     unit="ops"), w=8)
    L.add(timeseries("Model time per hotkey", "Model seconds spent for each hotkey's requests, per second.",
                     (f"sum by (hotkey, model) (rate(cascade_hotkey_model_seconds_total{{{HK}}}[{RI}]))",
                      "{{hotkey}} {{model}}"),
                     unit="percentunit", stack=True), w=8)
    L.add(timeseries("Loaded workers and loads", "Workers with sessions loaded (lazy models drop to 0 when idle), and loads.",
                     (f"sum by (model) (cascade_model_loaded{{{I}}})", "loaded {{model}}"),
                     (f"sum by (model) (increase(cascade_model_loads_total{{{I}}}[{RI}]))", "loads {{model}}")), w=8)
    L.add(timeseries("CPU fallbacks", "CUDA models running on the CPU, and batches prepared on the CPU.",
                     (f"sum(cascade_model_cpu_fallbacks_total{{{I}}})", "models on CPU"),
                     (f"sum by (model) (increase(cascade_model_cpu_preprocess_total{{{I}}}[{RI}]))", "CPU prep {{model}}")), w=8)

    L.row("Axon (subnet 72)")
    L.add(timeseries("Axon requests by status", "/ImageSynapse answers: 200, and the refusals (401 signature/nonce, 403 not admitted, 5xx).",
                     (f"sum by (status) (rate(cascade_axon_requests_total{{{I}}}[{RI}]))", "{{status}}"),
                     unit="reqps", stack=True), w=8)
    L.add(timeseries("Admission decisions", "How callers were admitted, or why not.",
                     (f"sum by (result) (rate(cascade_axon_admission_total{{{I}}}[{RI}]))", "{{result}}"),
                     unit="reqps", stack=True), w=8)
    L.add(timeseries("HTTP refusals", "Requests refused before a policy ran, by code and status.",
                     (f"sum by (code, status) (rate(cascade_rejected_total{{{I}}}[{RI}]))", "{{status}} {{code}}"),
                     unit="reqps"), w=8)

    L.row("Metagraph")
    L.add(timeseries("Snapshot age", "Alert past an hour (CascadeMetagraphStale).",
                     (f"cascade_metagraph_age_seconds{{{I}}}", "age"), unit="s",
                     thresholds=steps((None, "transparent"), (3600, "red"))), w=12, h=6)
    L.add(stat("Neurons", "", f"cascade_metagraph_neurons{{{I}}}"), w=4, h=6)
    L.add(stat("Block", "", f"cascade_metagraph_block{{{I}}}", unit="none"), w=4, h=6)
    L.add(stat("Snapshot", "Loaded, and stale past stale_after_s.",
               f"cascade_metagraph_loaded{{{I}}} - (cascade_metagraph_stale{{{I}}} or cascade_metagraph_loaded{{{I}}} * 0)",
               thresholds=steps((None, "red"), (1, "green")),
               mappings=[{"type": "value", "options": {"0": {"text": "STALE / NONE"}, "1": {"text": "FRESH"}}}]), w=4, h=6)

    L.row("GPU")
    L.add(timeseries("GPU utilization", "", (f"cascade_gpu_utilization_ratio{{{I}}}", "GPU {{device}}"),
                     unit="percentunit", maximum=1), w=6)
    L.add(timeseries("GPU memory used", "Alert past 95 % (CascadeGpuMemoryFull).",
                     (f"cascade_gpu_memory_used_bytes{{{I}}} / cascade_gpu_memory_total_bytes{{{I}}}", "GPU {{device}}"),
                     unit="percentunit", maximum=1, thresholds=steps((None, "transparent"), (0.95, "red"))), w=6)
    L.add(timeseries("GPU temperature", "Alert past 85 °C (CascadeGpuHot).",
                     (f"cascade_gpu_temperature_celsius{{{I}}}", "GPU {{device}}"),
                     unit="celsius", minimum=None, thresholds=steps((None, "transparent"), (85, "red"))), w=6)
    L.add(timeseries("GPU power and throttling", "Watts, and NVML throttle reasons in effect.",
                     (f"cascade_gpu_power_watts{{{I}}}", "GPU {{device}} W"),
                     (f"cascade_gpu_throttled{{{I}}} == 1", "GPU {{device}} {{reason}}")), w=6)
    L.add(timeseries("Model GPU memory", "Device memory each model's load and warm-up took.",
                     (f"cascade_model_gpu_memory_bytes{{{I}}} > 0", "{{model}}"), unit="bytes", stack=True), w=12)

    L.row("Reloads")
    L.add(timeseries("Reloads by outcome", "applied, refused (the last good version kept serving), unchanged.",
                     (f"sum by (outcome) (increase(cascade_reloads_total{{{I}}}[{RI}]))", "{{outcome}}"),
                     bars=True), w=12)
    L.add(timeseries("Refused changes", "GET /admin/status names each refused file and why.",
                     (f"sum(increase(cascade_refused_changes_total{{{I}}}[{RI}]))", "refused"),
                     bars=True, thresholds=steps((None, "transparent"), (1, "red"))), w=12)
    L._newline()
    return L.panels


def variables():
    def query(name, label, q, multi=True):
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": q, "refId": f"var-{name}", "qryType": 1}, "definition": q,
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
        }

    return [
        {"name": "ds", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "skipUrlSync": False},
        query("instance", "Miner", 'label_values(up{job="cascade"}, instance)'),
        query("hotkey", "Hotkey", 'label_values(cascade_requests_total{instance=~"$instance"}, hotkey)'),
        query("arm", "Arm", 'label_values(cascade_arm_requests_total{instance=~"$instance"}, arm)'),
    ]


def dashboard():
    return {
        "uid": "cascade-miner",
        "title": "cascade miner (subnet 72)",
        "description": "Answers, latency, models, axon, metagraph and GPU of cascade (deploy/grafana/make_dashboard.py).",
        "tags": ["cascade", "subnet-72"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": variables()},
        "panels": build(),
    }


def main():
    text = json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not what make_dashboard.py writes: run python3 deploy/grafana/make_dashboard.py")
            return 1
        print(f"{OUT.name}: up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
