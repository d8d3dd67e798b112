# Shell functions shared by the benchmark scripts (bench_*.sh). Source it; it defines functions only.

# bench_source_of BUILD_DIR: prints the commit BUILD_DIR was configured from, with the number of files
# changed under src/ kernels/ cmake/ since that commit, for the report's "source:" line.
bench_source_of() {
  local src_dir commit n_dirty
  src_dir="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$1/CMakeCache.txt")"
  if [[ "$(git -C "$src_dir" rev-parse --show-toplevel 2>/dev/null)" == "$(realpath "$src_dir")" ]]; then
    commit="$(git -C "$src_dir" rev-parse --short HEAD)"
    n_dirty="$(git -C "$src_dir" status --porcelain -- src kernels cmake CMakeLists.txt | wc -l)"
    if [[ "$n_dirty" != 0 ]]; then
      commit="$commit + uncommitted changes in $n_dirty file(s) under src/ kernels/ cmake/"
    fi
    echo "$commit"
  else
    echo "unknown ($src_dir is not a git checkout)"
  fi
}

# bench_find_peer VENV WORK IMPORTS PIN...: sets peer_py to VENV's python once `import IMPORTS` works
# there, else peer_skip to the reason. Debian's python3-torch (apt, when root) is seen through
# --system-site-packages of VENV (created when missing); the PINs come from PyPI (none: only the import
# is checked). Logs go to WORK.
bench_find_peer() {
  local venv="$1" work="$2" imports="$3"
  shift 3
  peer_py=""
  peer_skip=""
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import $imports" 2>/dev/null; then
    peer_py="$venv/bin/python"; return
  fi
  if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-venv \
        >"$work/apt.log" 2>&1 || { peer_skip="apt-get install python3-torch failed: $(tail -1 "$work/apt.log")"; return; }
    else
      peer_skip="Debian's python3-torch is not installed (sudo apt-get install python3-torch) and this is not root"
      return
    fi
  fi
  if [[ ! -x "$venv/bin/python" ]]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv" >"$work/venv.log" 2>&1 ||
      { peer_skip="cannot create the venv $venv: $(tail -1 "$work/venv.log")"; return; }
  fi
  if (($#)); then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >"$work/pip.log" 2>&1 ||
      { peer_skip="pip install $* into $venv failed: $(tail -1 "$work/pip.log")"; return; }
  fi
  "$venv/bin/python" -c "import $imports" >"$work/import.log" 2>&1 ||
    { peer_skip="import $imports fails in $venv: $(tail -1 "$work/import.log")"; return; }
  peer_py="$venv/bin/python"
}

# bench_build ROOT BUILD_DIR LOG_NAME TARGET...: configures BUILD_DIR (Ninja, Release) when it has no
# CMakeCache.txt and builds the targets; on failure prints the log's tail and exits 2. Then sets
# commit (bench_source_of) and build_type.
bench_build() {
  local root="$1" build="$2" log="$2/$3_build.log"
  shift 3
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  if ! cmake --build "$build" --target "$@" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "error: building $* in $build failed (log: $log); test-tree tools need ADAPT_TESTS=ON" >&2
    exit 2
  fi
  commit="$(bench_source_of "$build")"
  build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")"
}

# bench_vocab_model BUILD_DIR WORK: the `bench` preset's shape (f32) with the vocabulary of its byte-level
# tokenizer (1,024 tokens) in WORK/model, so that every token the random weights pick can be detokenised
# (the adapt_gen benchmarks).
bench_vocab_model() {
  local build="$1" work="$2"
  printf 'preset = "bench"\ndtype = "f32"\nseed = 1\n[shape]\nvocab_size = 1024\n' >"$work/recipe.toml"
  "$build/bin/adapt_model" make --recipe "$work/recipe.toml" --out "$work/model" >"$work/make.log" 2>&1 ||
    { cat "$work/make.log" >&2; exit 1; }
}

# bench_corpus_text ROOT TOKENS OUT: about TOKENS tokens of bench_vocab_model's tokenizer (~2.3 bytes a
# token) of the source files of ROOT/inputs/corpus, concatenated, into the file OUT.
bench_corpus_text() {
  python3 - "$1/inputs/corpus" "$2" "$3" <<'PY'
import pathlib, sys
corpus, tokens, out = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
text = ""
for f in sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix not in (".md",)):
    text += f.read_text(errors="replace") + "\n"
    if len(text) > tokens * 2.3:
        break
out.write_text(text[: int(tokens * 2.3)])
PY
}

# bench_elapsed START: prints the seconds since START (a `date +%s.%N` stamp), to the millisecond.
bench_elapsed() {
  awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.3f", e - s }'
}

# bench_timed_gen BUILD_DIR LOG ARG...: runs BUILD_DIR's adapt_gen with ARG... (its output to LOG; on
# failure LOG goes to stderr and the script exits) and prints its wall time in seconds.
bench_timed_gen() {
  local build="$1" log="$2" start
  shift 2
  start="$(date +%s.%N)"
  "$build/bin/adapt_gen" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  bench_elapsed "$start"
}

# bench_tcmalloc WORK: sets tcmalloc to the path of Debian's libtcmalloc_minimal.so.4 (installed when
# missing and root; log in WORK), or to "" when there is none, for peers whose step allocates on every
# step (LD_PRELOAD="$tcmalloc").
bench_tcmalloc() {
  local find='/libtcmalloc_minimal\.so\.4 / {p = $NF} END {print p}'
  tcmalloc="$(ldconfig -p 2>/dev/null | awk "$find")"
  if [[ -z "$tcmalloc" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtcmalloc-minimal4 >"$1/apt-tc.log" 2>&1 &&
      tcmalloc="$(ldconfig -p 2>/dev/null | awk "$find")"
  fi
  return 0
}

# bench_min BEST VALUE: prints the smaller of two numbers, or VALUE when BEST is empty (a best-of-rounds
# figure kept across rounds).
bench_min() {
  if [[ -z "$1" ]] || awk -v a="$2" -v b="$1" 'BEGIN { exit !(a < b) }'; then echo "$2"; else echo "$1"; fi
}

# bench_footer BUILD_DIR LOAD_START LOAD_END THREADS: the source, build and load-average lines that end
# every report (uses commit and build_type from bench_build), with a warning when the cores were shared.
bench_footer() {
  local build="$1" load_start="$2" load_end="$3" threads="$4"
  echo "source: $commit, build $build ($build_type)"
  echo "load average (1, 5, 15 min): $load_start at the start, $load_end at the end, on $threads cores"
  awk -v l="${load_start%% *}" -v e="${load_end%% *}" -v n="$threads" \
    'BEGIN { if (l > 0.5 || e > 0.5) printf "warning: other processes were running; figures are noisy (load %s/%s on %d cores)\n", l, e, n }'
}

# bench_blas_env: prints `OPENBLAS_CORETYPE=SkylakeX` when this CPU runs AVX-512 but the system's
# OpenBLAS does not recognise it and picked its generic SSE3 kernels ("Prescott"): Debian 12's OpenBLAS
# 0.3.21 does that on Xeons newer than itself (family 6 model 207 seen here), at a fifth of the speed
# of its AVX-512 kernels. Peers that multiply through OpenBLAS (Debian's torch, gemm_bench --impl
# openblas) run with it, so that they are measured at their best. Prints nothing otherwise.
bench_blas_env() {
  grep -qw avx512f /proc/cpuinfo || return 0
  local core
  core="$(python3 -c 'import ctypes; l = ctypes.CDLL("libopenblas.so.0"); l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())' 2>/dev/null)" || return 0
  if [[ "$core" == Prescott || "$core" == Core2 || "$core" == Nehalem ]]; then
    echo "OPENBLAS_CORETYPE=SkylakeX"
  fi
}

# bench_blas_setup WHO: sets the array blas_env to bench_blas_env's output and, when it is not empty,
# says in the report that WHO (the peers that multiply through OpenBLAS) run with it.
bench_blas_setup() {
  read -ra blas_env <<<"$(bench_blas_env)"
  if [[ ${#blas_env[@]} -gt 0 ]]; then
    echo "OpenBLAS does not recognise this CPU (it picked its SSE3 kernels): $1 with ${blas_env[*]}"
  fi
}

# bench_torch_source PY: where PY's torch comes from, for the report: Debian's python3-torch (seen
# through the venv) or a PyPI wheel that pip installed into the venv (when a pinned package wants a
# newer torch than Debian's); "?" without PY.
bench_torch_source() {
  [[ -n "$1" ]] || { echo "?"; return; }
  "$1" -c 'import torch; print("Debian python3-torch" if torch.__file__.startswith("/usr/lib/python3/") else "a PyPI wheel in the venv")' 2>/dev/null || echo "?"
}

# bench_llamacpp PY WORK [CACHE (default ~/.cache/adapt/llama.cpp)]: llama.cpp as a peer, built from
# source: the llama.cpp that the PyPI sdist of llama-cpp-python (pinned below) vendors, fetched with
# PY's pip and built once into CACHE (CMake, Ninja, Release, GGML_NATIVE=ON: its CPU kernels for this
# CPU, OpenMP), ~5 minutes on two cores. Sets llamacpp_bin (the directory of llama-bench and libllama),
# llamacpp_src (the sdist's root: the Python bindings, and llama.cpp's gguf-py under vendor/) and
# llamacpp_version, or llamacpp_skip to the reason it is not available. The bindings' pure-Python
# dependencies are installed into PY's venv. Logs go to WORK.
bench_llamacpp() {
  local py="$1" work="$2" cache="${3:-$HOME/.cache/adapt/llama.cpp}" pin=0.3.36 src lcpp
  llamacpp_bin="" llamacpp_src="" llamacpp_version="" llamacpp_skip=""
  [[ -n "$py" ]] || { llamacpp_skip="no Python peer venv (needed for numpy and pip)"; return; }
  src="$cache/llama_cpp_python-$pin"
  lcpp="$src/vendor/llama.cpp"
  if [[ ! -x "$lcpp/build/bin/llama-bench" ]]; then
    if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
      llamacpp_skip="cmake and ninja are needed to build llama.cpp"; return
    fi
    mkdir -p "$cache"
    echo "building llama.cpp (llama-cpp-python $pin's vendored copy) into $cache, once (~5 min)" >&2
    if [[ ! -d "$src" ]]; then
      "$py" -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
        "llama-cpp-python==$pin" -d "$cache" >"$work/llamacpp-download.log" 2>&1 &&
        tar -xzf "$cache/llama_cpp_python-$pin.tar.gz" -C "$cache" ||
        { llamacpp_skip="cannot fetch llama-cpp-python $pin from PyPI: $(tail -1 "$work/llamacpp-download.log")"; return; }
    fi
    cmake -S "$lcpp" -B "$lcpp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF >"$work/llamacpp-build.log" 2>&1 &&
      cmake --build "$lcpp/build" --target llama-bench >>"$work/llamacpp-build.log" 2>&1 ||
      { llamacpp_skip="building llama.cpp failed: $(tail -1 "$work/llamacpp-build.log")"; return; }
  fi
  if ! "$py" -c "import diskcache, jinja2, typing_extensions" 2>/dev/null; then
    "$py" -m pip install --quiet --disable-pip-version-check diskcache==5.6.3 jinja2 typing-extensions \
      >"$work/llamacpp-pip.log" 2>&1 ||
      { llamacpp_skip="pip install of the bindings' dependencies failed: $(tail -1 "$work/llamacpp-pip.log")"; return; }
  fi
  llamacpp_bin="$lcpp/build/bin"
  llamacpp_src="$src"
  local version
  # The whole output, then its first line: a pipe into head may end llama-bench with SIGPIPE, fatal under
  # pipefail.
  version="$("$llamacpp_bin/llama-bench" --version 2>&1 || true)"
  llamacpp_version="llama-cpp-python $pin's llama.cpp (${version%%$'\n'*})"
}

# bench_llamacpp_gguf VENV WORK MODEL_DIR OUT: llama.cpp as a peer on MODEL_DIR's weights: the venv
# (bench_find_peer, numpy), llama.cpp (bench_llamacpp) and MODEL_DIR written as the GGUF file OUT
# (scripts/make_gguf.py). Sets peer_py and bench_llamacpp's variables; llamacpp_skip says why not when a
# step failed.
bench_llamacpp_gguf() {
  local venv="$1" work="$2" model="$3" out="$4" root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  bench_find_peer "$venv" "$work" "numpy" numpy
  llamacpp_skip="$peer_skip"
  [[ -z "$peer_py" ]] || bench_llamacpp "$peer_py" "$work"
  if [[ -z "$llamacpp_skip" ]]; then
    "$peer_py" "$root/scripts/make_gguf.py" "$model" "$out" --gguf-py "$llamacpp_src/vendor/llama.cpp/gguf-py" \
      >"$work/gguf.log" 2>&1 || llamacpp_skip="make_gguf.py failed: $(tail -1 "$work/gguf.log")"
  fi
}
