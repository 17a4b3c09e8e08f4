"""Runs the book's code samples against a running local gim (scripts/run-local.sh's endpoints).

    python3 scripts/docs/samples.py            # run every checked sample, pages in the book's order
    python3 scripts/docs/samples.py --lint     # only check that every sample is marked

Every fenced block in sh, bash, console or python must follow a marker comment on the line above:

    <!-- check -->                  a shell sample: run (all of a page's run in order, one bash -e script)
    <!-- check expect="TEXT" -->    ... and TEXT must appear in what the page's samples print
    <!-- check: file=NAME -->       a file sample: written as NAME into the work directory first
    <!-- not checked: REASON -->    not run; the reason is shown to nobody but must be given

so no sample is silently left out. All pages share one work directory (files written by one page,
such as generated stubs, serve the later ones) holding symlinks to the repository's proto/, config/
and .local/, so samples use the same relative paths as a reader in the clone's root.
"""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SAMPLE_LANGS = {"sh", "bash", "console", "python", "py"}
MARKER = re.compile(r"<!--\s*(check(?::\s*file=(?P<file>\S+))?(?:\s+expect=\"(?P<expect>[^\"]*)\")?|not checked:\s*(?P<reason>.+?))\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
PAGE_TIMEOUT = 180


def pages_in_nav_order():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    out = []

    def walk(items):
        for item in items:
            for v in item.values() if isinstance(item, dict) else [item]:
                if isinstance(v, list):
                    walk(v)
                else:
                    out.append(DOCS / v)

    walk(nav)
    listed = set(out)
    # Pages outside the nav are built by MkDocs too, so their samples are checked as well.
    out += sorted(p for p in DOCS.rglob("*.md") if p not in listed)
    return out


def blocks(page):
    """Yields (marker match or None, lang, code, line number) for each fenced block."""
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        yield MARKER.search(prev), lang, "\n".join(lines[start + 1 : j]) + "\n", start + 1
        i = j + 1


def collect():
    errors, pages = [], []
    for page in pages_in_nav_order():
        rel = page.relative_to(ROOT)
        files, script, expects, skipped = {}, [], [], 0
        for marker, lang, code, line in blocks(page):
            if lang not in SAMPLE_LANGS and not marker:
                continue
            if not marker:
                errors.append(f"{rel}:{line}: {lang} block without a <!-- check --> or <!-- not checked: why --> marker")
            elif marker.group("reason"):
                skipped += 1
            elif marker.group("file"):
                files[marker.group("file")] = code
            elif lang in ("sh", "bash"):
                script.append(f"# {rel}:{line}\n{code}")
                if marker.group("expect"):
                    expects.append(marker.group("expect"))
            else:
                errors.append(f"{rel}:{line}: only sh blocks run; mark a {lang} block with file=NAME")
        pages.append((rel, files, script, expects, skipped))
    return errors, pages


def main():
    errors, pages = collect()
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    if "--lint" in sys.argv[1:]:
        return 0
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gim-docs-") as work:
        work = Path(work)
        for name in ("proto", "config", ".local"):
            (work / name).symlink_to(ROOT / name)
        for _, files, _, _, _ in pages:
            for name, code in files.items():
                (work / name).write_text(code)
        for rel, files, script, expects, skipped in pages:
            if not script:
                if files or skipped:
                    print(f"docs samples: {rel}: {len(files)} file(s), {skipped} not checked")
                continue
            body = "set -euo pipefail\n" + "\n".join(script)
            try:
                r = subprocess.run(["bash", "-c", body], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=PAGE_TIMEOUT)
                out, code = r.stdout + r.stderr, r.returncode
            except subprocess.TimeoutExpired as e:
                out, code = f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {PAGE_TIMEOUT}s", -1
            missing = [x for x in expects if x not in out]
            ok = code == 0 and not missing
            print(f"docs samples: {rel}: {len(script)} run, {len(files)} file(s), {skipped} not checked: "
                  + ("ok" if ok else f"FAILED (exit {code}, missing {missing})"))
            if not ok:
                failed += 1
                print(out, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
