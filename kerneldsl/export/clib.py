"""`kd.export.c_library`: an op as a standalone C or CUDA library, no Python needed.

    lib = kd.export.c_library([X, W, B], [Y], "out/layer_norm", target="c")
    # out/layer_norm.c            forward: the kernels and the entry points layer_norm, layer_norm_shapes, ...
    # out/layer_norm_backward.c   the backward kd.grad derives (layer_norm_backward, ...)
    # out/layer_norm.h            every entry point, documented; error codes
    # out/layer_norm.json         inputs, outputs, dtypes, symbolic shapes, sizes, messages, build lines
    print(lib.build["cc"])        # cc -O3 ... -shared -fPIC -o liblayer_norm.so layer_norm.c layer_norm_backward.c -lm

Each function is a translation unit of its own (its kernels and its entry points, see
export/cfunction.py), so the forward and backward never share a symbol but their entry points.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..codegen.c import environment
from ..target import Target
from .cfunction import ERRORS, FunctionSource, comment, function_source
from .spec import OpSpec, check_name, op_spec

NVCC_LIBRARY_FLAGS = ("-O3", "-std=c++17")


@dataclass(frozen=True)
class Library:
    """What c_library wrote: the files, the build command lines, the functions."""
    name: str
    target: str  # c | cuda
    directory: Path
    sources: tuple  # paths of the .c / .cu files
    header: Path
    metadata: Path
    build: dict  # {"cc": command line} or {"nvcc": command line}
    functions: tuple = field(default=(), repr=False)  # FunctionSource, forward first

    def __str__(self) -> str:
        files = ", ".join(p.name for p in (*self.sources, self.header, self.metadata))
        return f"{self.name} ({self.target}) in {self.directory}: {files}\nbuild: {next(iter(self.build.values()))}"


def c_library(inputs, outputs, path, target: str = "c", backward: bool = True) -> Library:
    """Write the op from `inputs` to `outputs` as a library: `path` is the folder and base name
    ("out/layer_norm"), `target` "c" or "cuda"; `backward=False` leaves out the backward."""
    path = Path(path)
    name = check_name(path.name, "library")
    spec = op_spec(inputs, outputs, name, backward=backward)
    kind = Target.resolve(target).kind
    if kind not in ("c", "cuda"):
        raise ValueError(f"c_library: target must be 'c' or 'cuda', got {target!r}")
    return write_library(spec, path.parent, kind)


def library_functions(spec: OpSpec, target: str) -> tuple:
    """The forward's (and backward's) translation units."""
    fns = [function_source(spec.forward, target)]
    if spec.backward is not None:
        fns.append(function_source(spec.backward, target))
    return tuple(fns)


def build_line(name: str, target: str, files: list, tgt: Target | None = None) -> dict:
    """The command that builds lib<name>.so from `files` in their folder."""
    if target == "cuda":
        tgt = tgt or Target.detect("cuda")
        arch = tgt.cuda_arch or "sm_90"
        cmd = ["nvcc", *NVCC_LIBRARY_FLAGS, f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC",
               "-o", f"lib{name}.so", *files]
        return {"nvcc": shlex.join(cmd)}
    tgt = tgt or Target.detect("c")
    flags = list(tgt.cflags)
    libs = [f for f in flags if f.startswith("-l")]
    opts = [f for f in flags if not f.startswith("-l")]
    cmd = [*tgt.cc, *opts, "-shared", "-fPIC", "-o", f"lib{name}.so", *files, *libs, "-lm"]
    return {"cc": shlex.join(cmd)}


def write_library(spec: OpSpec, directory: Path, target: str) -> Library:
    from ..runtime.cache import kerneldsl_version
    functions = library_functions(spec, target)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"c_library: cannot create the folder {directory}: {e}") from e
    sources = [directory / f"{f.symbol}{f.suffix}" for f in functions]
    header = directory / f"{spec.name}.h"
    metadata = directory / f"{spec.name}.json"
    build = build_line(spec.name, target, [p.name for p in sources])
    roles = ["forward", "backward"]
    prefix = spec.name.upper()
    text = environment().get_template("export/header.h.j2").render(
        name=spec.name, version=kerneldsl_version(), target=target, cuda=target == "cuda",
        sources=[p.name for p in sources], build=next(iter(build.values())), prefix=prefix,
        guard=f"KD_EXPORT_{prefix}_H",
        errors=[(code, n, comment(t)) for code, (n, t) in sorted(ERRORS.items(), reverse=True)],
        functions=[{"doc": comment(f.describe(role)), "prototypes": f.prototypes} for f, role in zip(functions, roles)])
    for f, p in zip(functions, sources):
        _write(p, f.text)
    _write(header, text)
    meta = describe(spec, functions, target, build, [p.name for p in sources], header.name)
    _write(metadata, json.dumps(meta, indent=1) + "\n")
    return Library(spec.name, target, directory, tuple(sources), header, metadata, build, functions)


def describe(spec: OpSpec, functions, target: str, build: dict, sources: list, header: str) -> dict:
    """The metadata JSON: what each function takes and gives, as data."""
    from ..runtime.cache import kerneldsl_version

    def tensor(a):
        t = a.tensor
        return {"name": a.name, "argument": a.data, "dtype": t.dtype, "shape": [str(d) for d in t.shape]}

    def function(f: FunctionSource, role: str, source: str):
        d = {"symbol": f.symbol, "role": role, "source": source,
             "entry_points": [f.symbol, f"{f.symbol}_shapes", f"{f.symbol}_error"],
             "sizes": [{"name": n, "from": src} for n, src in f.sizes],
             "inputs": [tensor(a) for a in f.arrays if a.role == "input"],
             "outputs": [tensor(a) for a in f.arrays if a.role == "output"],
             "errors": {str(code): text for code, text in sorted(f.messages.items())},
             "synchronizes": bool(f.needs_sync and target == "cuda")}
        return d

    fns = [function(functions[0], "forward", sources[0])]
    if len(functions) > 1:
        b = function(functions[1], "backward", sources[1])
        b["gradients"] = {spec.backward.output_name(n): spec.inputs[k].name
                          for n, k in enumerate(spec.grad_inputs)}
        b["saved_inputs"] = [spec.inputs[k].name for k in spec.saved_inputs]
        b["saved_outputs"] = [spec.outputs[j].name for j in spec.saved_outputs]
        b["cotangents"] = [spec.outputs[j].name for j in spec.grad_outputs]
        fns.append(b)
    return {"name": spec.name, "kerneldsl_version": kerneldsl_version(), "target": target,
            "header": header, "sources": sources, "build": build, "functions": fns}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OSError(f"c_library: cannot write {path}: {e}") from e


__all__ = ["Library", "build_line", "c_library", "library_functions", "write_library"]
