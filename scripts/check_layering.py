#!/usr/bin/env python3
"""Checks that every source file includes only from modules it may depend on.

Purpose: the layout is the architecture (STYLE.md, "Source layout"). Each folder under src/ is one
module; a file may include headers of its own module and of the modules listed for it below, and
nothing higher. toml++ may be included only by src/config; CUDA/NCCL headers only by backend/cuda,
ops/cuda, comm/nccl and kernels/. A build without the CUDA toolkit compiles every other .cpp of src/
and tests/ (the GPU tests too, which then skip), so there a header that needs the toolkit (a CUDA/NCCL
header, or a project header that includes one) must be included under `#if ADAPT_HAVE_CUDA` (or
ADAPT_HAVE_NCCL, ADAPT_CUDA_EMU). Exits 1 and lists every violation, naming file and line.

Invocation:  python3 scripts/check_layering.py [--root DIR]
             python3 scripts/check_layering.py --self-test   (proves the check catches violations)
"""
import argparse
import os
import re
import sys
import tempfile

# module -> modules it may include (besides itself). Mirrors STYLE.md's table; `io` (safetensors,
# model files) sits just above tensor; `parallel` reads its rank's weight shards through `io`.
ALLOWED = {
    "core": set(),
    "dtype": {"core"},
    "tensor": {"core", "dtype"},
    "backend": {"core", "dtype", "tensor"},
    "io": {"core", "dtype", "tensor"},
    "ops": {"core", "dtype", "tensor", "backend", "kernels"},
    "comm": {"core", "dtype", "tensor", "backend"},
    "parallel": {"core", "dtype", "tensor", "backend", "ops", "comm", "io"},
    "model": {"core", "dtype", "tensor", "backend", "ops", "parallel", "comm", "io"},
    "adapters": {"core", "dtype", "tensor", "backend", "ops", "parallel", "comm", "model", "io"},
    "optim": {"core", "dtype", "tensor", "backend", "ops", "comm", "parallel"},
    "checkpoint": {"core", "dtype", "tensor", "backend", "comm", "io"},
    "tokenizer": {"core"},
    "generate": {"core", "dtype", "tensor", "backend", "ops", "comm", "parallel", "model", "adapters", "tokenizer",
                 "io"},
    "train": {"core", "dtype", "tensor", "backend", "ops", "comm", "parallel", "model", "adapters", "optim",
              "checkpoint", "tokenizer", "io", "plan"},
    "plan": {"core", "dtype", "tensor", "comm", "parallel", "model", "adapters"},
    "config": {"core", "dtype"},  # plus header-only config structs, see CONFIG_STRUCT_HEADERS
    "apps": None,  # may include everything
    "kernels": {"core", "dtype"},
}
# config may include these header-only struct definitions of the modules it fills.
CONFIG_STRUCT_HEADERS = re.compile(r"^[a-z_]+/[a-z_]*(config|options|recipe)\.h$")
CUDA_OK = ("src/backend/cuda/", "src/ops/cuda/", "src/comm/nccl", "kernels/")
# Device glue outside ops/ that may call kernels/ launchers: the adapters' CUDA glue and the optimizer's
# device AdamW (the update and the gradient norm on the compute stream).
KERNEL_GLUE = ("src/adapters/cuda/", "src/optim/device_adamw_cuda.cpp")
# Header-only host/device code that kernels/ may include from a module above it (no includes of its
# own, so the layering below is untouched): the adapters' counter-based hash (CPU and GPU dropout
# masks agree by construction).
HOST_DEVICE_HEADERS = {"adapters/adapter_rng_hash.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
CUDA_HEADERS = re.compile(r"^(cuda[a-zA-Z_]*\.h|cublas.*\.h|cublasLt\.h|nccl\.h|cuda_(bf16|fp16|runtime)\.h)$")
# Compiled only where the CUDA toolkit is: the CUDA folders, the CUDA emulation (its own cuda_runtime.h), and
# the sources their CMakeLists add under if(ADAPT_HAVE_CUDA).
CUDA_BUILD_ONLY = ("src/backend/cuda/", "src/ops/cuda/", "src/comm/nccl", "src/adapters/cuda/", "kernels/",
                   "tests/cuda_emu/", "src/optim/device_adamw_cuda.cpp", "tests/bench/gpu_ops_bench.cpp",
                   "tests/bench/offload_bench.cpp")
CONDITION = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)")
CUDA_MACRO = re.compile(r"\b(ADAPT_HAVE_CUDA|ADAPT_HAVE_NCCL|ADAPT_CUDA_EMU)\b")


def module_of(rel):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2:
        return parts[1]
    if parts[0] == "kernels":
        return "kernels"
    return None


def scan_includes(path):
    """(kind, header, line number, whether a CUDA #if encloses it) for every #include of a file."""
    found, stack = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            c = CONDITION.match(line)
            if c:
                what, cond = c.groups()
                # `#if ADAPT_HAVE_CUDA` (not `#if !ADAPT_HAVE_CUDA`, `#ifndef`, or an #else) guards
                cuda = what in ("if", "ifdef", "elif") and bool(CUDA_MACRO.search(cond)) and "!" not in cond
                if what in ("if", "ifdef", "ifndef"):
                    stack.append(cuda)
                elif stack and what == "elif":
                    stack[-1] = cuda
                elif stack and what == "else":
                    stack[-1] = False
                elif stack and what == "endif":
                    stack.pop()
                continue
            m = INCLUDE.match(line)
            if m:
                found.append((m.group(1), m.group(2), lineno, any(stack)))
    return found


def check_cuda_guards(root):
    """Files a build without the CUDA toolkit compiles that include what needs it outside a CUDA #if."""
    includes = {}
    for top in ("src", "kernels", "tests"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if f.endswith((".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu")):
                    path = os.path.join(dirpath, f)
                    includes[os.path.relpath(path, root).replace(os.sep, "/")] = scan_includes(path)

    def resolve(inc):
        return next((base + inc for base in ("src/", "") if base + inc in includes), None)

    needs = {}  # header -> whether including it needs the toolkit

    def needs_cuda(rel, seen=frozenset()):
        if rel not in needs:
            needs[rel] = rel not in seen and any(
                not guarded and ((kind == "<" and CUDA_HEADERS.match(inc)) or
                                 (kind == '"' and resolve(inc) and needs_cuda(resolve(inc), seen | {rel})))
                for kind, inc, _, guarded in includes[rel])
        return needs[rel]

    problems = []
    for rel in sorted(includes):
        if not rel.endswith((".cpp", ".cc")) or rel.startswith(CUDA_BUILD_ONLY):
            continue
        for kind, inc, lineno, guarded in includes[rel]:
            if guarded:
                continue
            if (kind == "<" and CUDA_HEADERS.match(inc)) or (kind == '"' and resolve(inc) and needs_cuda(resolve(inc))):
                shown = f"<{inc}>" if kind == "<" else f'"{inc}"'
                problems.append(f"{rel}:{lineno}: includes {shown}, which needs the CUDA toolkit, outside "
                                "`#if ADAPT_HAVE_CUDA`: a build without CUDA compiles this file")
    return problems


def check(root):
    problems = check_cuda_guards(root)
    for top in ("src", "kernels"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith((".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                mod = module_of(rel)
                if mod is None:
                    continue
                if mod not in ALLOWED:
                    problems.append(f"{rel}: module '{mod}' is not in the layering table; add it to "
                                    "scripts/check_layering.py and STYLE.md's table")
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        kind, inc = m.groups()
                        if inc.startswith("toml++") and mod != "config":
                            problems.append(f"{rel}:{lineno}: includes <{inc}>; only src/config may include toml++")
                        if CUDA_HEADERS.match(inc) and not rel.startswith(CUDA_OK):
                            problems.append(f"{rel}:{lineno}: includes <{inc}>; CUDA/NCCL headers belong in "
                                            "backend/cuda, ops/cuda, comm/nccl or kernels/")
                        if kind != '"' or "/" not in inc:
                            continue
                        target = inc.split("/")[0]
                        if target == "tests":
                            problems.append(f"{rel}:{lineno}: includes test code \"{inc}\"")
                            continue
                        if target not in ALLOWED or target == mod or ALLOWED[mod] is None:
                            continue
                        if mod == "config" and CONFIG_STRUCT_HEADERS.match(inc):
                            continue
                        if target == "kernels" and rel.startswith(KERNEL_GLUE):
                            continue
                        if mod == "kernels" and inc in HOST_DEVICE_HEADERS:
                            continue
                        if target not in ALLOWED[mod]:
                            problems.append(f"{rel}:{lineno}: module '{mod}' includes \"{inc}\" from '{target}', "
                                            f"which is not below it (allowed: {', '.join(sorted(ALLOWED[mod])) or 'none'})")
    return problems


def self_test():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "src", "tensor"))
        os.makedirs(os.path.join(d, "src", "model"))
        with open(os.path.join(d, "src", "tensor", "bad.cpp"), "w") as f:
            f.write('#include "model/llama_config.h"\n#include <toml++/toml.h>\n#include <cuda_runtime.h>\n')
        with open(os.path.join(d, "src", "model", "good.cpp"), "w") as f:
            f.write('#include "tensor/tensor.h"\n#include "model/weight_names.h"\n')
        os.makedirs(os.path.join(d, "src", "ops", "cuda"))
        os.makedirs(os.path.join(d, "tests", "gpu"))
        with open(os.path.join(d, "src", "ops", "cuda", "thing_cuda.h"), "w") as f:
            f.write('#include <cuda_runtime.h>\n')
        with open(os.path.join(d, "tests", "gpu", "bad_test.cpp"), "w") as f:
            f.write('#if !ADAPT_HAVE_CUDA\n#include "ops/cuda/thing_cuda.h"\n#endif\n')
        with open(os.path.join(d, "tests", "gpu", "good_test.cpp"), "w") as f:
            f.write('#if ADAPT_HAVE_CUDA\n#include <cuda_runtime.h>\n#include "ops/cuda/thing_cuda.h"\n#endif\n')
        problems = check(d)
        assert len(problems) == 5, problems  # bad.cpp's CUDA include breaks both rules
        assert sum(p.startswith("src/tensor/bad.cpp:") for p in problems) == 4, problems
        assert sum(p.startswith("tests/gpu/bad_test.cpp:2:") for p in problems) == 1, problems
    print("self-test passed: 5 planted violations found, clean files accepted")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    problems = check(os.path.abspath(args.root))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering violation(s)")
        return 1
    print("layering ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
