#!/usr/bin/env python3
"""The worked examples of src/plan/README.md are adapt_plan's output: each "$ adapt_plan ARGS" line in a
fenced block is run, and what it prints must be the lines that follow it (up to the next "$ " line or
the end of the block).

    plan_readme_test.py SOURCE_DIR BIN_DIR [--update]

--update rewrites the README with the current output instead of comparing.
"""
import difflib
import shlex
import subprocess
import sys
from pathlib import Path


def examples(lines):
    """(index of the "$ adapt_plan" line, index after its output) for every example."""
    out, in_block, i = [], False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            in_block = not in_block
        elif in_block and lines[i].startswith("$ adapt_plan "):
            j = i + 1
            while not lines[j].startswith("$ ") and not lines[j].startswith("```"):
                j += 1
            out.append((i, j))
            i = j
            continue
        i += 1
    return out


def main():
    src, bindir = Path(sys.argv[1]), Path(sys.argv[2])
    update = "--update" in sys.argv[3:]
    readme = src / "src/plan/README.md"
    lines = readme.read_text().split("\n")
    found = examples(lines)
    if not found:
        print(f"{readme}: no '$ adapt_plan' examples found")
        return 1
    failed = 0
    for start, end in reversed(found):
        args = shlex.split(lines[start][2:])[1:]
        run = subprocess.run([str(bindir / "adapt_plan"), *args], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{readme}:{start + 1}: exit {run.returncode}\n{run.stdout}{run.stderr}")
            failed += 1
            continue
        got = run.stdout.rstrip("\n").split("\n")
        want = lines[start + 1:end]
        blank = 0  # blank lines that part this example from the next in one block
        while want and want[-1] == "":
            want, blank = want[:-1], blank + 1
        if update:
            lines[start + 1:end] = got + [""] * blank
        elif got != want:
            print(f"{readme}:{start + 1}: the output differs from the README (--update rewrites it):")
            sys.stdout.writelines(difflib.unified_diff([w + "\n" for w in want], [g + "\n" for g in got],
                                                       "README", "adapt_plan"))
            failed += 1
    if update:
        readme.write_text("\n".join(lines))
        print(f"{readme}: {len(found)} example(s) rewritten")
        return 0
    print(f"{readme}: {len(found) - failed} of {len(found)} example(s) match adapt_plan's output")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
