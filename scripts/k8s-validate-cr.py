#!/usr/bin/env python3
"""Strictly validates custom resources against a CRD's openAPIV3Schema.

kubernetes-validate knows only built-in kinds, so scripts/k8s-lint.sh checks the sample
GimCluster with this. Strict: every object schema that lists properties gets
additionalProperties: false, so a misspelt field fails here instead of being silently pruned
by the API server.

usage: k8s-validate-cr.py CRD.yaml RESOURCE.yaml...
"""
import sys

import jsonschema
import yaml


def strict(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if schema.get("nullable"):
            t = schema.get("type")
            if isinstance(t, str):
                schema["type"] = [t, "null"]
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def main():
    crd_docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    schemas = {}
    for crd in crd_docs:
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schemas[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    failed = False
    for path in sys.argv[2:]:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            schema = schemas.get(key)
            if schema is None:
                print(f"{path}: no CRD for {key}")
                failed = True
                continue
            # apiVersion, kind and metadata are checked by the server, not by the CRD schema.
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(body), key=lambda e: list(e.path))
            for e in errors:
                print(f"{path}: {'.'.join(map(str, e.path))}: {e.message}")
            failed |= bool(errors)
            if not errors:
                print(f"{path}: {key[1]} {doc['metadata'].get('name')} is valid")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
