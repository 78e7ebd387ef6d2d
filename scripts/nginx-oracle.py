#!/usr/bin/env python3
"""Writes crossplane's reading of each nginx config (NGINX's own Python parser,
`pip install crossplane`) as tests/import/golden/nginx/<file>.parse, the dumps
tests/import.rs compares rampart's nginx tokenizer with.

    python3 -m venv /tmp/xp && /tmp/xp/bin/pip install crossplane
    /tmp/xp/bin/python scripts/nginx-oracle.py ../shared/import-corpus/nginx/*.conf tests/import/nginx/*.conf
"""
import os
import sys

import crossplane

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "import", "golden", "nginx")


def dump(block, out):
    for d in block:
        out.append(f"{d['directive']}@{d['line']}|" + "|".join(d["args"]))
        if "block" in d:
            dump(d["block"], out)


for path in sys.argv[1:]:
    r = crossplane.parse(path, single=True, check_ctx=False, check_args=False, comments=False)
    cfg = r["config"][0]
    if cfg["errors"]:
        sys.exit(f"{path}: {cfg['errors']}")
    out = []
    dump(cfg["parsed"], out)
    with open(os.path.join(OUT, os.path.basename(path) + ".parse"), "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"{path}: {len(out)} directives")
