#!/usr/bin/env python3
"""Checks that every PromQL expression of the Grafana dashboards and the alert rules names
only metric families listed in deploy/metric_families.txt, and that the dashboards are sound
JSON that Grafana provisions (unique panel ids and uid, a datasource on every query, the
$hotkey and $arm variables present and used).

    python3 deploy/check_metric_names.py [--metrics FILE]

--metrics FILE: a /metrics scrape of a running server; families listed as exported (not
`pending`) that it lacks are reported as notes (a family appears once it has a sample), and
a family it exports that the list lacks fails. With --strict, every family a dashboard or rule
names must be in the scrape unless the list marks it `pending` or `conditional` (the scrape
of tests/it/metrics.rs, taken after traffic that creates the others).
Exit 0 when clean, 1 with one line per problem.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "start", "end",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAME = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def families():
    listed, pending, conditional = {}, set(), set()
    for line in (DEPLOY / "metric_families.txt").read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if not line:
            continue
        listed[line[0]] = line[1] if len(line) > 1 else "untyped"
        if "pending" in line[2:]:
            pending.add(line[0])
        if "conditional" in line[2:]:
            conditional.add(line[0])
    return listed, pending, conditional


def metric_names(expr):
    """The metric names an expression selects (functions, keywords and labels left out)."""
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "X", expr)  # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = GROUPING.sub(" ", e)  # by (...), on (...), group_left (...)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    names = set()
    for m in NAME.finditer(e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS or word == "X":
            continue
        names.add(word)
    return names


def family_of(name, listed):
    if name in listed:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and listed.get(base) == "histogram":
            return base
    return None


def panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows


def check_dashboard(path, listed, problems, used):
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path}: not JSON: {e}")
        return
    where = path.relative_to(DEPLOY.parent)
    if not d.get("uid") or not d.get("title"):
        problems.append(f"{where}: no uid or title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    for need in ("hotkey", "arm"):
        if need not in variables:
            problems.append(f"{where}: no ${need} template variable")
    exprs = []
    for v in variables.values():
        q = v.get("query")
        if v.get("type") == "query":
            exprs.append((f"variable {v['name']}", q.get("query", "") if isinstance(q, dict) else q or ""))
    ids = set()
    for p in panels(d):
        pid = p.get("id")
        if pid in ids:
            problems.append(f"{where}: panel id {pid} used twice")
        ids.add(pid)
        if p.get("type") == "row":
            continue
        if not p.get("gridPos"):
            problems.append(f"{where}: panel {p.get('title')!r} has no gridPos")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: panel {p.get('title')!r} has no query")
        for t in targets:
            if not (t.get("datasource") or p.get("datasource")):
                problems.append(f"{where}: panel {p.get('title')!r} query {t.get('refId')} has no datasource")
            if not t.get("expr"):
                problems.append(f"{where}: panel {p.get('title')!r} query {t.get('refId')} has no expr")
            exprs.append((f"panel {p.get('title')!r}", t.get("expr", "")))
    for need in ("hotkey", "arm"):
        if not any(re.search(rf"\$(\{{)?{need}\b", e) for w, e in exprs if w.startswith("panel")):
            problems.append(f"{where}: no panel query uses ${need}")
    for what, expr in exprs:
        for name in metric_names(label_values_metric(expr)):
            fam = family_of(name, listed)
            if fam is None:
                problems.append(f"{where}: {what}: unknown metric {name!r} in {expr!r}")
            else:
                used.add(fam)


def label_values_metric(q):
    """label_values(metric{...}, label) -> metric{...} (a Grafana query, not PromQL)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q or "")
    return m.group(1) if m else (q or "")


def check_rules(path, listed, problems, used):
    where = path.relative_to(DEPLOY.parent)
    doc = yaml.safe_load(path.read_text())
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            for name in metric_names(r.get("expr", "")):
                fam = family_of(name, listed)
                if fam is None:
                    problems.append(f"{where}: {r.get('alert') or r.get('record')}: unknown metric {name!r}")
                else:
                    used.add(fam)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", type=Path, help="a /metrics scrape to compare with")
    ap.add_argument("--strict", action="store_true",
                    help="with --metrics: fail on a family the dashboards or rules name that the scrape lacks")
    args = ap.parse_args()
    listed, pending, conditional = families()
    problems, used = [], set()
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        problems.append("no dashboards under deploy/grafana/dashboards")
    for path in dashboards:
        check_dashboard(path, listed, problems, used)
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml")):
        check_rules(path, listed, problems, used)
    unused = sorted(set(listed) - used - {"up"})
    if args.metrics:
        scraped = set()
        for line in args.metrics.read_text().splitlines():
            if line.startswith("# TYPE "):
                name, kind = line.split()[2:4]
                scraped.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
        missing = sorted(f for f in listed if f.startswith("cascade_") and f not in pending and f not in scraped)
        print(f"note: exported families without a sample in {args.metrics}: {', '.join(missing) or 'none'}")
        unknown = sorted(f for f in scraped if f.startswith("cascade_") and f not in listed)
        for f in unknown:
            problems.append(f"{args.metrics}: exports {f}, which deploy/metric_families.txt does not list")
        if args.strict:
            for f in sorted(used - scraped - pending - conditional - {"up"}):
                problems.append(f"{args.metrics}: a dashboard or rule names {f}, which the server did not export")
    for p in problems:
        print(f"FAIL {p}")
    print(
        f"metric names: {len(dashboards)} dashboard(s), {len(used)} families used"
        + (f", not used anywhere: {', '.join(unused)}" if unused else "")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
