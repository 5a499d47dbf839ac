#!/usr/bin/env python3
"""Renders or lints the Meshwork chart with Helm's own engine (Helm v4 as a
library: PyPI helm-python-sdk), for tests and people.

  render.py render [--values JSON] [--namespace NS]  -> JSON {template: manifest}
  render.py lint   [--values JSON]                    -> JSON lint report
  render.py schema [--values JSON]                    -> exit 1 + Helm's message if values break values.schema.json

Errors from Helm are printed on stderr as they are, exit status 1.
"""
import argparse
import json
import os
import sys

import helm_python as helm

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "meshwork")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["render", "lint", "schema"])
    p.add_argument("--values", default="{}", help="values as JSON (merged over values.yaml)")
    p.add_argument("--namespace", default="meshwork-system")
    p.add_argument("--chart", default=CHART)
    a = p.parse_args()
    values = json.loads(a.values)
    try:
        chart = helm.Chart.load(a.chart)
        if a.action == "render":
            chart.validate_schema(values)
            out = chart.render(values, name="meshwork", namespace=a.namespace, is_install=True)
            out = {k: v for k, v in out.items() if v.strip()}
            out.update({"crds/" + c["filename"].split("/")[-1]: c["data"] for c in chart.crds})
            json.dump(out, sys.stdout)
        elif a.action == "lint":
            json.dump(helm.lint(a.chart, values, strict=True, namespace=a.namespace), sys.stdout)
        else:
            chart.validate_schema(values)
    except Exception as e:  # Helm's errors carry their own message
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
