"""Writes or checks the book's GimCluster reference, generated from the CRD's OpenAPI schema.

    python3 scripts/docs/crd_reference.py          # check: exit 1 if the committed page is stale
    python3 scripts/docs/crd_reference.py --write  # regenerate docs/reference/gimcluster.md

The CRD itself is generated from the operator's types (crdgen) and checked by scripts/k8s-lint.sh,
so every field the API server accepts appears here with its type, default, bounds and description.
Needs PyYAML.
"""
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds/gimcluster.yaml"
PAGE = ROOT / "docs/reference/gimcluster.md"

# Fields whose schema is a standard Kubernetes type: described once, not expanded field by field.
K8S_TYPES = {
    "resources": "ResourceRequirements (`requests`, `limits`)",
    "affinity": "Affinity",
    "tolerations": "list of Toleration",
    "topologySpreadConstraints": "list of TopologySpreadConstraint",
    "adminFrom": "list of NetworkPolicyPeer (`podSelector`, `namespaceSelector`, `ipBlock`)",
}


def one_line(text):
    return " ".join((text or "").split()).replace("|", "\\|")


def kind(schema, name):
    if name in K8S_TYPES:
        return "Kubernetes " + K8S_TYPES[name]
    t = schema.get("type", "object")
    if t == "array":
        inner = schema.get("items", {}).get("type", "object")
        return f"list of {inner}"
    if t == "object" and "additionalProperties" in schema:
        inner = schema["additionalProperties"].get("type", "object")
        return f"map of {inner}"
    return t


def bounds(schema):
    out = []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"] if v is not None))
    if "minimum" in schema:
        out.append(f"≥ {schema['minimum']:g}")
    if "maximum" in schema:
        out.append(f"≤ {schema['maximum']:g}")
    if "minLength" in schema:
        out.append(f"length ≥ {schema['minLength']}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    return "; ".join(out)


def default(schema):
    if "default" not in schema:
        return ""
    return "`" + one_line(yaml.safe_dump(schema["default"], default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()) + "`"


def rows(schema, path, required, out):
    props = schema.get("properties") or schema.get("items", {}).get("properties") or {}
    req = set(schema.get("required") or schema.get("items", {}).get("required") or [])
    for name in sorted(props):
        sub = props[name]
        p = f"{path}.{name}"
        if sub.get("type") == "array" and "properties" in sub.get("items", {}):
            p_show = p + "[]"
        else:
            p_show = p
        out.append(
            f"| `{p_show}` | {kind(sub, name)} | {'yes' if name in req else ''} | {default(sub)} "
            f"| {bounds(sub)} | {one_line(sub.get('description'))} |"
        )
        if name not in K8S_TYPES:
            rows(sub, p_show, req, out)


def render():
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]
    version = spec["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [
        "<!-- Generated from crds/gimcluster.yaml by `python3 scripts/docs/crd_reference.py --write`;"
        " do not edit by hand. -->",
        "",
        "# GimCluster reference",
        "",
        f"`apiVersion: {spec['group']}/{version['name']}`, `kind: {spec['names']['kind']}` "
        f"(short name `{spec['names']['shortNames'][0]}`), namespaced. "
        + one_line(schema.get("description")) + ".",
        "",
        "The API server checks types, defaults and bounds below when you apply the resource; the"
        " operator checks relations between fields (for example `minReplicas` ≤ `maxReplicas`) and"
        " reports a problem as a `Degraded` condition. `kubectl scale gimcluster/NAME --replicas N`"
        " sets `spec.conn.replicas`.",
        "",
    ]
    header = ["| field | type | required | default | allowed | description |", "|---|---|---|---|---|---|"]
    for part, title in (("spec", "Spec"), ("status", "Status (written by the operator)")):
        lines += [f"## {title}", ""] + header
        out = []
        rows(schema["properties"][part], part, set(), out)
        lines += out + [""]
    lines += ["## Printer columns (`kubectl get gimclusters`)", "", "| column | from | description |", "|---|---|---|"]
    for col in version.get("additionalPrinterColumns", []):
        lines.append(f"| {col['name']} | `{col['jsonPath']}` | {one_line(col.get('description'))} |")
    return "\n".join(lines).rstrip() + "\n"


def main():
    text = render()
    if "--write" in sys.argv[1:]:
        PAGE.write_text(text)
        return 0
    if not PAGE.exists() or PAGE.read_text() != text:
        print(f"{PAGE.relative_to(ROOT)} is stale: run python3 scripts/docs/crd_reference.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
