#!/usr/bin/env python3
"""Parses an OpenMetrics text exposition (the admin listener's /metrics) on stdin with the
Prometheus project's own Python parser and prints every sample as JSON, one per line:
{"name": ..., "labels": {...}, "value": ...}. Exits 1 with the parser's error when the text
does not parse. Used by tests/admin.rs."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"unparsable metrics: {e}", file=sys.stderr)
        return 1
    for family in families:
        for sample in family.samples:
            print(json.dumps({
                "family": family.name,
                "type": family.type,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
