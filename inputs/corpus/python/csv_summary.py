#!/usr/bin/env python3
"""csv_summary.py - describe the columns of a CSV file from the command line.

For every column the tool infers a type (integer, float, boolean, date, or text) and prints
summary statistics: count, missing values, distinct values, and for numeric columns the mean,
standard deviation, min, quartiles and max. Statistics are computed in one pass with Welford's
algorithm, so files larger than memory work; quartiles use a bounded reservoir sample.

Usage:
    python3 csv_summary.py data.csv
    python3 csv_summary.py --delimiter ';' --columns price,qty --json sales.csv
    cat data.csv | python3 csv_summary.py -
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import random
import sys
from dataclasses import dataclass, field
from typing import Iterable, Optional

MISSING = {"", "na", "n/a", "null", "none", "nan", "-"}
TRUE_WORDS = {"true", "yes", "y", "1"}
FALSE_WORDS = {"false", "no", "n", "0"}
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%dT%H:%M:%S")
RESERVOIR_SIZE = 10_000


def parse_date(text: str) -> Optional[dt.datetime]:
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def classify(text: str) -> str:
    """Returns the narrowest type name that can hold `text`."""
    lowered = text.lower()
    try:
        int(text)
        return "integer"
    except ValueError:
        pass
    try:
        value = float(text)
        if math.isfinite(value):
            return "float"
    except ValueError:
        pass
    if lowered in TRUE_WORDS or lowered in FALSE_WORDS:
        return "boolean"
    if parse_date(text) is not None:
        return "date"
    return "text"


# Type lattice: a column is the join of the types of its values.
WIDENING = {
    ("integer", "float"): "float",
    ("float", "integer"): "float",
}


def join_types(a: Optional[str], b: str) -> str:
    if a is None or a == b:
        return b
    return WIDENING.get((a, b), "text")


@dataclass
class RunningStats:
    """Welford's online mean and variance plus min/max."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        self.minimum = min(self.minimum, x)
        self.maximum = max(self.maximum, x)

    @property
    def stddev(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


@dataclass
class Reservoir:
    """Uniform sample of at most `size` items from a stream (Algorithm R)."""

    size: int
    rng: random.Random
    seen: int = 0
    items: list = field(default_factory=list)

    def add(self, x: float) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(x)
            return
        j = self.rng.randrange(self.seen)
        if j < self.size:
            self.items[j] = x


def quantile(sorted_values: list, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class ColumnSummary:
    name: str
    rng: random.Random
    count: int = 0
    missing: int = 0
    kind: Optional[str] = None
    distinct: set = field(default_factory=set)
    distinct_overflow: bool = False
    stats: RunningStats = field(default_factory=RunningStats)
    reservoir: Optional[Reservoir] = None
    longest: int = 0

    MAX_DISTINCT = 100_000

    def add(self, raw: str) -> None:
        text = raw.strip()
        self.count += 1
        if text.lower() in MISSING:
            self.missing += 1
            return
        self.kind = join_types(self.kind, classify(text))
        self.longest = max(self.longest, len(text))
        if not self.distinct_overflow:
            self.distinct.add(text)
            if len(self.distinct) > self.MAX_DISTINCT:
                self.distinct_overflow = True
                self.distinct.clear()
        try:
            value = float(text)
        except ValueError:
            return
        if math.isfinite(value):
            self.stats.add(value)
            if self.reservoir is None:
                self.reservoir = Reservoir(RESERVOIR_SIZE, self.rng)
            self.reservoir.add(value)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "type": self.kind or "empty",
            "count": self.count,
            "missing": self.missing,
            "distinct": None if self.distinct_overflow else len(self.distinct),
        }
        if self.kind in ("integer", "float") and self.stats.n:
            sample = sorted(self.reservoir.items) if self.reservoir else []
            out.update(
                mean=self.stats.mean,
                std=self.stats.stddev,
                min=self.stats.minimum,
                q25=quantile(sample, 0.25),
                median=quantile(sample, 0.5),
                q75=quantile(sample, 0.75),
                max=self.stats.maximum,
            )
        elif self.kind == "text":
            out["longest"] = self.longest
        return out


def summarise(rows: Iterable[list], header: list, wanted: Optional[set], seed: int) -> list:
    rng = random.Random(seed)
    columns = [ColumnSummary(name, rng) for name in header]
    ragged = 0
    for row in rows:
        if len(row) != len(header):
            ragged += 1
        for col, value in zip(columns, row):
            if wanted is None or col.name in wanted:
                col.add(value)
    if ragged:
        print(f"warning: {ragged} row(s) had a different number of fields than the header", file=sys.stderr)
    return [c.to_dict() for c in columns if wanted is None or c.name in wanted]


def format_number(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.4g}"
    return str(x)


def print_table(summaries: list) -> None:
    keys = ["type", "count", "missing", "distinct", "mean", "std", "min", "median", "max"]
    name_width = max([len("column")] + [len(s["name"]) for s in summaries])
    print(f"{'column':<{name_width}}  " + "  ".join(f"{k:>9}" for k in keys))
    print("-" * (name_width + 11 * len(keys)))
    for s in summaries:
        cells = [f"{format_number(s.get(k)):>9}" for k in keys]
        print(f"{s['name']:<{name_width}}  " + "  ".join(cells))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise the columns of a CSV file.")
    parser.add_argument("path", help="CSV file, or - for standard input")
    parser.add_argument("--delimiter", default=",", help="field separator (default: ,)")
    parser.add_argument("--columns", help="comma-separated subset of columns to describe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--seed", type=int, default=1234, help="seed for the quantile sample")
    args = parser.parse_args(argv)

    handle = sys.stdin if args.path == "-" else open(args.path, newline="", encoding="utf-8")
    try:
        reader = csv.reader(handle, delimiter=args.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            print("error: the file is empty", file=sys.stderr)
            return 2
        wanted = set(args.columns.split(",")) if args.columns else None
        if wanted:
            unknown = wanted - set(header)
            if unknown:
                print(f"error: unknown column(s): {', '.join(sorted(unknown))}", file=sys.stderr)
                return 2
        summaries = summarise(reader, header, wanted, args.seed)
    finally:
        if handle is not sys.stdin:
            handle.close()

    if args.json:
        json.dump(summaries, sys.stdout, indent=2, default=str)
        print()
    else:
        print_table(summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
