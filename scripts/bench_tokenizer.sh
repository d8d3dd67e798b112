#!/usr/bin/env bash
# Benchmark: Llama 3 encoding speed of adapt (adapt_tokenize --count --time) vs tiktoken (and HF
# tokenizers, for reference) on the same text, in the same run, single thread each.
#
# The text (~4 MB, built in a temp folder): inputs/corpus (code in 10 languages) repeated, plus the
# non-code strings of tests/golden/data/tokenizer/llama3_encode.jsonl (30 scripts, emoji, numbers,
# white space) repeated. Each implementation encodes it 3 times; the best time counts (adapt: encoding
# only, not loading). The ids must be identical (exit 1 otherwise). Prints MB/s and the ratio to tiktoken.
#
# Usage: scripts/bench_tokenizer.sh [BUILD_DIR (default build)] [TOKENIZER (default ../shared/models/llama3/tokenizer.model)]
# Needs: BUILD_DIR/bin/adapt_tokenize (ninja -C BUILD_DIR app_adapt_tokenize) and the venv that
# scripts/make_tokenizer_fixtures.py sets up (~/.cache/adapt/venv-tokenizer: tiktoken 0.14.0,
# tokenizers 0.23.3); it is created here if missing. Exit 77 when Meta's tokenizer.model is absent.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
tokenizer="${2:-$root/../shared/models/llama3/tokenizer.model}"
venv="${ADAPT_TOKENIZER_VENV:-$HOME/.cache/adapt/venv-tokenizer}"
bin="$build/bin/adapt_tokenize"

if [[ ! -f "$tokenizer" ]]; then
  echo "skipped: Meta's tokenizer.model not found at $tokenizer" >&2
  exit 77
fi
if [[ ! -x "$bin" ]]; then
  echo "error: $bin not found; build it with: ninja -C $build app_adapt_tokenize" >&2
  exit 2
fi
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check tiktoken==0.14.0 tokenizers==0.23.3
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
text="$work/bench.txt"

"$venv/bin/python" - "$root" "$text" <<'EOF'
import json, sys
from pathlib import Path
root, out = Path(sys.argv[1]), Path(sys.argv[2])
code = "".join(p.read_text() for p in sorted((root / "inputs" / "corpus").rglob("*")) if p.is_file() and p.name != "README.md")
rows = [json.loads(l) for l in (root / "tests/golden/data/tokenizer/llama3_encode.jsonl").open(encoding="utf-8")]
multi = "\n".join(r["text"] for r in rows if not r["cat"].startswith(("code", "sweep", "special")))
body = code * 20 + multi * 6
out.write_bytes(body.encode("utf-8"))
EOF

adapt_line=""
for i in 1 2 3; do
  line="$("$bin" --tokenizer "$tokenizer" --count "$text" --time 2>&1 >"$work/count.txt" | grep 'MB/s')"
  rate="$(sed -E 's/.* ([0-9.]+) MB\/s.*/\1/' <<<"$line")"
  if [[ -z "$adapt_line" ]] || awk "BEGIN{exit !($rate > $(sed -E 's/.* ([0-9.]+) MB\/s.*/\1/' <<<"$adapt_line"))}"; then
    adapt_line="$line"
  fi
done
adapt_rate="$(sed -E 's/.* ([0-9.]+) MB\/s.*/\1/' <<<"$adapt_line")"
adapt_count="$(awk '/total/ {print $1}' "$work/count.txt")"
"$bin" --tokenizer "$tokenizer" <"$text" >"$work/ids.txt"

"$venv/bin/python" - "$tokenizer" "$text" "$adapt_rate" "$adapt_count" "$work/ids.txt" <<'EOF'
import base64, sys, time
import tiktoken, tokenizers
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
path, text_path, adapt_rate, adapt_count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
adapt_ids = [int(x) for x in open(sys.argv[5]).read().split()]
PAT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
ranks = {}
for line in open(path, "rb"):
    if line.strip():
        t, r = line.split()
        ranks[base64.b64decode(t)] = int(r)
text = open(text_path, encoding="utf-8", newline="").read()  # no newline translation: the same bytes adapt reads
n_bytes = len(text.encode())
enc = tiktoken.Encoding("llama3", pat_str=PAT, mergeable_ranks=ranks, special_tokens={})

def best(fn):
    times, result = [], None
    for _ in range(3):
        t = time.perf_counter(); result = fn(); times.append(time.perf_counter() - t)
    return min(times), result

tt_s, tt_ids = best(lambda: enc.encode_ordinary(text))
# HF tokenizers on the same vocabulary (merges as TikTokenConverter orders them); one encode call (HF
# parallelizes only batches).
bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)); cs = bs[:]; n = 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + n); n += 1
b2u = dict(zip(bs, map(chr, cs))); bl = lambda b: "".join(b2u[x] for x in b)
merges = sorted(((t[:i], t[i:], r) for t, r in ranks.items() for i in range(1, len(t)) if t[:i] in ranks and t[i:] in ranks),
                key=lambda m: (m[2], ranks[m[0]], ranks[m[1]]))
hf = Tokenizer(models.BPE(vocab={bl(t): r for t, r in ranks.items()}, merges=[(bl(a), bl(b)) for a, b, _ in merges], ignore_merges=True))
hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PAT), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
hf_s, hf_enc = best(lambda: hf.encode(text, add_special_tokens=False))
if not (tt_ids == adapt_ids == hf_enc.ids and len(tt_ids) == adapt_count):
    sys.exit(f"ids differ: adapt {adapt_count} tokens, tiktoken {len(tt_ids)}, HF {len(hf_enc.ids)}")
tt_rate, hf_rate = n_bytes / 1e6 / tt_s, n_bytes / 1e6 / hf_s
print(f"text: {n_bytes / 1e6:.2f} MB, {len(tt_ids)} tokens (identical ids from all three)")
print(f"{'implementation':<34} {'MB/s':>8} {'vs tiktoken':>12}")
print(f"{'adapt (adapt_tokenize --count)':<34} {adapt_rate:>8.2f} {adapt_rate / tt_rate:>11.2f}x")
print(f"{'tiktoken ' + tiktoken.__version__ + ' encode_ordinary':<34} {tt_rate:>8.2f} {1.0:>11.2f}x")
print(f"{'HF tokenizers ' + tokenizers.__version__ + ' encode':<34} {hf_rate:>8.2f} {hf_rate / tt_rate:>11.2f}x")
EOF
