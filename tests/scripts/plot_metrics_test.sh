#!/usr/bin/env bash
# scripts/plot_metrics.py draws a PNG from a metrics.jsonl and rejects files without training steps.
# Usage: plot_metrics_test.sh PYTHON SOURCE_DIR   (exit 77 when matplotlib is missing)
set -euo pipefail
py=$1; src=$2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -c "import matplotlib" 2>/dev/null || { echo "skipped: matplotlib is not importable by $py"; exit 77; }
for s in $(seq 1 40); do
  echo "{\"kind\": \"train\", \"step\": $s, \"loss\": $(awk "BEGIN{print 4 - $s * 0.05}"), \"lr\": 0.001}"
  if [ $((s % 10)) = 0 ]; then echo "{\"kind\": \"eval\", \"step\": $s, \"eval_loss\": 3.0, \"eval_ppl\": 20.1}"; fi
done > "$tmp/metrics.jsonl"
"$py" "$src/scripts/plot_metrics.py" "$tmp/metrics.jsonl" -o "$tmp/curves.png"
head -c 8 "$tmp/curves.png" | od -An -c | grep -q "P   N   G" || { echo "not a PNG"; exit 1; }
echo '{"kind": "eval", "step": 1, "eval_loss": 2.0}' > "$tmp/empty.jsonl"
if "$py" "$src/scripts/plot_metrics.py" "$tmp/empty.jsonl" -o "$tmp/x.png" 2>"$tmp/err"; then
  echo "expected a failure for a file without training steps"; exit 1
fi
grep -q "no training steps" "$tmp/err"
echo "plot_metrics ok"
