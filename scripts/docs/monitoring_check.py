"""Checks the chart's monitoring objects: every PromQL expression parses, and every metric it uses
is one gim exports.

    python3 scripts/docs/monitoring_check.py RENDERED.yaml [METRICS_URL...]

RENDERED.yaml is `helm template` of the chart with monitoring enabled. The expressions are the
PrometheusRule's `expr`s and the Grafana dashboard's panel queries (Grafana variables replaced by
values first). Each is parsed with promql-parser (the Rust PromQL parser's Python binding), so a
syntax error fails here as promtool would fail it. With METRICS_URLs (the `/metrics` of running
logic and conn processes), every metric name used must be one those endpoints export: names come
from their `# TYPE` lines (counters as NAME_total, histograms as NAME_bucket/_sum/_count), plus
Prometheus's own `up`. Needs PyYAML and promql-parser.
"""
import json
import sys
import urllib.request

import promql_parser
import yaml

# Series Prometheus itself adds to every scrape target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Grafana variables in the dashboard's queries, and what to put in their place to parse them.
GRAFANA_VARS = {"$__rate_interval": "5m", "$namespace": ".+", "$cluster": ".+"}


def expressions(rendered):
    out = []
    kinds = set()
    for doc in yaml.safe_load_all(open(rendered)):
        if not doc:
            continue
        kinds.add(doc["kind"])
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    out.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))
        elif doc["kind"] == "ConfigMap" and "gim.json" in doc.get("data", {}):
            dash = json.loads(doc["data"]["gim.json"])
            for panel in dash["panels"]:
                for t in panel.get("targets", []):
                    expr = t["expr"]
                    for var, value in GRAFANA_VARS.items():
                        expr = expr.replace(var, value)
                    out.append((f"panel {panel['title']!r} {t['refId']}", expr))
    missing = {"PrometheusRule", "ConfigMap", "PodMonitor"} - kinds
    if missing:
        sys.exit(f"monitoring check: {rendered} has no {', '.join(sorted(missing))}")
    return out


def metric_names(expr):
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)

    promql_parser.walk(expr, visit)
    return names


def exported(urls):
    names = set(SCRAPE_SERIES)
    for url in urls:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in text.splitlines():
            if not line.startswith("# TYPE "):
                continue
            _, _, name, kind = line.split()[:4]
            if kind == "counter":
                names |= {name + "_total", name + "_created"}
            elif kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            else:
                names.add(name)
    return names


def main():
    rendered, urls = sys.argv[1], sys.argv[2:]
    exprs = expressions(rendered)
    have = exported(urls) if urls else None
    errors = []
    used = set()
    for where, expr in exprs:
        try:
            ast = promql_parser.parse(expr)
        except ValueError as e:
            errors.append(f"{where}: does not parse: {e}\n    {expr}")
            continue
        names = metric_names(ast)
        if not names:
            errors.append(f"{where}: selects no metric: {expr}")
        for name in names:
            used.add(name)
            if have is not None and name not in have:
                errors.append(f"{where}: gim does not export {name}")
    for e in errors:
        print(f"monitoring check: {e}", file=sys.stderr)
    if errors:
        return 1
    checked = f"all exported by {len(urls)} endpoint(s)" if urls else "names not checked"
    print(f"monitoring check: {len(exprs)} expressions parse; {len(used)} metrics used, {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
