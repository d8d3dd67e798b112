#!/usr/bin/env python3
"""Cross-check a tokenizer.json written by adapt against Hugging Face `tokenizers`.

adapt's tokenizer module trains a byte-level BPE vocabulary and writes it as an HF-style Llama 3
tokenizer.json (src/tokenizer/tokenizer_json.h). This script loads that file with the reference
implementation, `tokenizers.Tokenizer.from_file`, and checks that:

  * the vocabulary size is 256 bytes + n_merges + 256 Llama 3.1 special tokens;
  * the special tokens have the ids adapt promises (<|begin_of_text|> = 256 + n_merges, then
    <|end_of_text|>, ..., <|eom_id|> at +8, <|eot_id|> at +9, <|reserved_special_token_247|> at +255);
  * encode(text, add_special_tokens=True) starts with exactly one BOS;
  * decode(encode(x)) == x for every corpus file and for tricky strings (emoji, CJK, mixed
    newlines, long whitespace runs, control bytes, combining marks);
  * the merges are in effect: the corpus encodes to far fewer tokens than it has bytes;
  * tokenizer_config.json's chat_template renders the Llama 3.1 layout (SPEC-llama 4.5) when
    jinja2 is importable (the one part skipped, with a message, when it is not).

Invocation (CTest runs the first form as cpu.tokenizer_hf_check, label golden):

    python3 scripts/check_tokenizer_json.py --writer build/tests/make_tokenizer_json \\
        --corpus inputs/corpus [--n-merges 1000]
    python3 scripts/check_tokenizer_json.py --dir path/to/tokenizer_folder --n-merges 1000 \\
        --corpus inputs/corpus

With --writer, the given test binary trains on --corpus and writes the folder into a temporary
directory first. Exits 0 when every check passes, 1 when one fails, 2 on usage errors, and 77
(CTest: skipped) when `tokenizers` is not importable; install the pinned version with
`pip install -r scripts/requirements-test.txt`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

EXIT_SKIP = 77

# Index of each named Llama 3.1 special token after the BPE vocabulary (SPEC-llama 4.2).
SPECIAL_OFFSETS = {
    "<|begin_of_text|>": 0,
    "<|end_of_text|>": 1,
    "<|finetune_right_pad_id|>": 4,
    "<|start_header_id|>": 6,
    "<|end_header_id|>": 7,
    "<|eom_id|>": 8,
    "<|eot_id|>": 9,
    "<|python_tag|>": 10,
    "<|reserved_special_token_3|>": 11,
    "<|reserved_special_token_247|>": 255,
}

TRICKY = [
    "",
    "hello world",
    "  leading spaces and trailing   ",
    "🚀 launch 👩‍💻 family 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷",
    "漢字とかな交じり文、中文句子。한국어 문장",
    "Tiếng Việt có dấu; Ελληνικά; русский текст; עברית; العربية",
    "e\u0301 vs \u00e9, zero\u200bwidth, non\u00a0breaking",
    "windows\r\nline\rends\n\n\r\n\r\nmixed\n",
    " " * 100 + "x" + "\t" * 50 + "\n" * 30 + "y",
    "   \n\n\t  \n",
    "\x00\x01\x02\x1b[31mred\x1b[0m\x7f",
    "don't WE'LL they'RE I'm it's",
    "1234567890 3.14159 -42 1e-10 0x7fff_ffff",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "<|not_a_special_token|> <| |>",
]


def fail(message: str) -> None:
    print(f"FAIL: {message}")
    raise SystemExit(1)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def corpus_files(corpus: Path) -> list[Path]:
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "README.md")
    if not files:
        print(f"error: no corpus files under {corpus}", file=sys.stderr)
        raise SystemExit(2)
    return files


def run_writer(writer: Path, corpus: Path, out_dir: Path, n_merges: int) -> dict:
    proc = subprocess.run(
        [str(writer), str(corpus), str(out_dir), str(n_merges)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        fail(f"{writer} exited with {proc.returncode}: {proc.stderr.strip()}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"writer: {summary}")
    return summary


def check(tok_dir: Path, corpus: Path, n_merges: int, summary: dict | None) -> None:
    from tokenizers import Tokenizer  # imported here so that main() can report a skip

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    n_bpe = 256 + n_merges
    vocab_size = n_bpe + 256

    # Sizes.
    expect(tok.get_vocab_size(with_added_tokens=False) == n_bpe,
           f"BPE vocab size {tok.get_vocab_size(with_added_tokens=False)} != {n_bpe}")
    expect(tok.get_vocab_size(with_added_tokens=True) == vocab_size,
           f"vocab size {tok.get_vocab_size(with_added_tokens=True)} != {vocab_size}")
    if summary is not None:
        expect(summary["n_merges"] == n_merges, f"writer learned {summary['n_merges']} merges, not {n_merges}")
        expect(summary["vocab_size"] == vocab_size, f"writer reports vocab {summary['vocab_size']}")
        expect(summary["bos_id"] == n_bpe, f"writer reports bos {summary['bos_id']}")
        expect(summary["eot_id"] == n_bpe + 9, f"writer reports eot {summary['eot_id']}")
        expect(summary["eom_id"] == n_bpe + 8, f"writer reports eom {summary['eom_id']}")
        expect(summary["end_of_text_id"] == n_bpe + 1, f"writer reports end_of_text {summary['end_of_text_id']}")
    print(f"ok: vocab {vocab_size} = 256 bytes + {n_merges} merges + 256 specials")

    # Special tokens.
    for name, offset in SPECIAL_OFFSETS.items():
        expect(tok.token_to_id(name) == n_bpe + offset, f"{name} has id {tok.token_to_id(name)}, not {n_bpe + offset}")
        expect(tok.id_to_token(n_bpe + offset) == name, f"id {n_bpe + offset} is {tok.id_to_token(n_bpe + offset)}")
    bos = n_bpe
    with_bos = tok.encode("hello world", add_special_tokens=True).ids
    without = tok.encode("hello world", add_special_tokens=False).ids
    expect(with_bos[0] == bos, f"encode(add_special_tokens=True) starts with {with_bos[:3]}, not BOS {bos}")
    expect(with_bos[1:] == without, "add_special_tokens=True must only prepend BOS")
    expect(bos not in without, "BOS must not appear without add_special_tokens")
    chat = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    chat_ids = tok.encode(chat, add_special_tokens=False).ids
    expect(chat_ids[0] == n_bpe + 6 and chat_ids[-1] == n_bpe + 9, f"special tokens in text not matched: {chat_ids}")
    expect(tok.decode(chat_ids, skip_special_tokens=False) == chat, "chat text does not round-trip")
    print(f"ok: special token ids, BOS {bos} prepended once, specials matched inside text")

    # Round trips.
    for text in TRICKY:
        ids = tok.encode(text, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        expect(back == text, f"round trip failed for {text!r}: got {back!r}")
    n_bytes = 0
    n_tokens = 0
    files = corpus_files(corpus)
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids = tok.encode(text, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        expect(back == text, f"round trip failed for {path}")
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(ids)
    print(f"ok: decode(encode(x)) == x for {len(TRICKY)} tricky strings and {len(files)} corpus files")

    # Merges in effect: byte-level BPE with ~1000 merges gets code well under half a token per byte.
    ratio = n_tokens / n_bytes
    expect(ratio < 0.5, f"corpus encodes to {n_tokens} tokens for {n_bytes} bytes ({ratio:.3f} tokens/byte)")
    print(f"ok: corpus {n_bytes} bytes -> {n_tokens} tokens ({ratio:.3f} tokens/byte)")


def check_chat_template(tok_dir: Path) -> None:
    try:
        import jinja2
    except ImportError:
        print("note: jinja2 is not importable; chat_template rendering not checked")
        return
    config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    # transformers renders chat templates with trim_blocks and lstrip_blocks.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    # transformers' tojson filter: json.dumps with non-ASCII kept (Jinja's own escapes HTML).
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    template = env.from_string(config["chat_template"])
    tool = ' {"r": "é"}\n'
    messages = [
        {"role": "system", "content": " Be brief. "},
        {"role": "user", "content": "Hi\n"},
        {"role": "assistant", "content": "Hello."},
        {"role": "tool", "content": tool},
        {"role": "user", "content": "Bye"},
    ]
    got = template.render(messages=messages, bos_token=config["bos_token"], add_generation_prompt=True)
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    want = (
        "<|begin_of_text|>" + header.format("system") + "Cutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>" + header.format("user") + "Hi<|eot_id|>"
        + header.format("assistant") + "Hello.<|eot_id|>" + header.format("ipython") + json.dumps(tool, ensure_ascii=False)
        + "<|eot_id|>" + header.format("user") + "Bye<|eot_id|>"
        + header.format("assistant")
    )
    expect(got == want, f"chat_template renders {got!r}, expected {want!r}")
    print("ok: chat_template renders the Llama 3.1 layout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--writer", type=Path, help="make_tokenizer_json test binary: trains and writes the folder")
    source.add_argument("--dir", type=Path, help="an existing tokenizer folder written by adapt")
    parser.add_argument("--corpus", type=Path, required=True, help="inputs/corpus (training data, round-trip texts)")
    parser.add_argument("--n-merges", type=int, default=1000, help="merges requested / present (default 1000)")
    args = parser.parse_args()

    try:
        import tokenizers
    except ImportError as e:
        print(f"skipped: the Python package 'tokenizers' is not importable ({e}); "
              "install it with: pip install -r scripts/requirements-test.txt")
        return EXIT_SKIP
    print(f"tokenizers {tokenizers.__version__}")

    if args.writer is not None:
        with tempfile.TemporaryDirectory(prefix="adapt-tokjson-") as tmp:
            summary = run_writer(args.writer, args.corpus, Path(tmp) / "tokenizer", args.n_merges)
            check(Path(tmp) / "tokenizer", args.corpus, args.n_merges, summary)
            check_chat_template(Path(tmp) / "tokenizer")
    else:
        check(args.dir, args.corpus, args.n_merges, None)
        check_chat_template(args.dir)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
