"""What a tuning record applies to: the workload's structure, its concrete shapes, and where it runs.

    w = Workload.of(f.inputs, f.outputs, f.config.fuse)
    w.digest                    # 'a3f0...': the same for the same graph whatever its names
    key = RecordKey.of(w, shapes_of(arrays), target)   # what a record is stored and found under

The structural hash walks the graph in a fixed order and writes every node without its names:
placeholders by their position among the build's inputs, compute ops by their place in the
topological order, axes and sizes by their first appearance. So `C = A @ B` hashes alike when
the tensors are called X, W and Y, and a renamed size or axis changes nothing, while a
different body, dtype, shape expression, tag or input order does. The key adds what decides
which schedule is fastest: the input shapes and dtypes, the target (kind, ISA, vector width,
cores, CUDA architecture), the compiler and kerneldsl's version (Triton's `key=`, TVM's
workload key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields

from ..ir import expr as E
from ..ir.tensor import ComputeOp, Placeholder, topo_order
from ..runtime.cache import kerneldsl_version
from ..target import Target, compiler_identity


class _Canon:
    """Writes nodes as name-free tuples; shared subexpressions get one id (the graph is a DAG)."""

    def __init__(self, inputs) -> None:
        self.tensors = {p: ("in", k) for k, p in enumerate(inputs)}
        self.nodes: dict = {}  # expr -> its id
        self.axes: dict = {}  # IndexVar / SizeVar -> order of first appearance
        self.out: list = []

    def expr(self, e) -> int:
        got = self.nodes.get(e)
        if got is not None:
            return got
        if isinstance(e, (E.SizeVar, E.IndexVar)):
            row = (type(e).__name__, self.axes.setdefault(e, len(self.axes)),
                   self.expr(e.extent) if isinstance(e, E.IndexVar) else None,
                   getattr(e, "reduce", None), e.dtype)
        else:
            row = [type(e).__name__]
            for f in fields(e):
                if f.name in ("name", "tensor") and isinstance(getattr(e, f.name), str):
                    continue  # a name (Var, Bound's tensor): names do not matter
                row.append(self.value(getattr(e, f.name)))
            row = tuple(row)
        self.out.append(row)
        self.nodes[e] = len(self.nodes)
        return self.nodes[e]

    def value(self, v):
        if isinstance(v, E.Expr):
            return ("e", self.expr(v))
        if isinstance(v, (ComputeOp, Placeholder)):
            return ("t",) + self.tensors[v]
        if isinstance(v, tuple):
            return tuple(self.value(x) for x in v)
        if isinstance(v, float):
            return ("f", v.hex())
        return v


def structural_hash(inputs, outputs, fuse: bool = True) -> str:
    """A hex digest of the graph computing `outputs` from `inputs`, independent of every name."""
    canon = _Canon(inputs)
    order = topo_order(tuple(outputs))
    for p in order:
        if isinstance(p, Placeholder) and p not in canon.tensors:  # read but not listed: by order
            canon.tensors[p] = ("extra", len(canon.tensors))
    for k, t in enumerate(t for t in order if isinstance(t, ComputeOp)):
        canon.tensors[t] = ("op", k)
    rows = [("fuse", fuse)]
    for p in inputs:
        rows.append(("input", p.dtype, canon.value(tuple(p.shape))))
    for t in order:
        if isinstance(t, ComputeOp):
            rows.append(("op", canon.tensors[t][1], t.dtype, t.tag, canon.value(tuple(t.shape)),
                         canon.value(tuple(t.axes)), canon.value(t.body)))
    rows.append(("outputs", tuple(canon.tensors[t] for t in outputs)))
    text = json.dumps([rows, canon.out], separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Workload:
    """A graph to tune: its structural digest and a readable summary (for listings)."""
    digest: str
    summary: str  # "C[n, m] from A[n, k], B[k, m]": the names of the build that made the record
    dtypes: tuple  # of the inputs
    symbolic: bool  # some input dimension is a size (the kernel serves every shape)

    @staticmethod
    def of(inputs, outputs, fuse: bool = True) -> Workload:
        ins = ", ".join(f"{p.name}{_dims(p.shape)}" for p in inputs)
        outs = ", ".join(f"{t.name}{_dims(t.shape)}" for t in outputs)
        symbolic = any(not isinstance(d, E.Const) for p in inputs for d in p.shape)
        return Workload(structural_hash(inputs, outputs, fuse), f"{outs} from {ins}",
                        tuple(p.dtype for p in inputs), symbolic)


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def shapes_of(arrays) -> tuple:
    """The concrete shapes of a call's inputs: what a record is keyed on."""
    return tuple(tuple(int(n) for n in getattr(a, "shape", ())) for a in arrays)


def target_key(target: Target) -> dict:
    """The parts of a target that decide the best schedule (no compiler paths: see compiler_key)."""
    return {"kind": target.kind, "isa": target.isa, "vector_bytes": target.vector_bytes, "cores": target.cores,
            "cuda_arch": target.cuda_arch if target.is_cuda else None}


def compiler_key(target: Target) -> str:
    """The compiler that builds the target's kernels, and its flags (a new compiler or new flags
    may want other knobs): from the filesystem only, so a build's lookup starts no process."""
    if target.kind == "cuda":
        cmd = (target.nvcc,)
    elif target.kind == "cuda-emu":
        cmd = tuple(target.cxx)
    else:
        cmd = tuple(target.cc)
    try:
        ident = list(compiler_identity(cmd))
    except (FileNotFoundError, OSError):
        ident = list(cmd)
    flags = list(target.cflags) if target.kind == "c" else []
    return hashlib.sha256(json.dumps([ident, flags]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RecordKey:
    """Everything a record is found by. `digest` (one string) is what the database indexes."""
    workload: str
    shapes: tuple
    dtypes: tuple
    target: dict
    compiler: str
    version: str

    @staticmethod
    def of(workload: Workload, shapes: tuple, target: Target) -> RecordKey:
        return RecordKey(workload.digest, tuple(tuple(s) for s in shapes), workload.dtypes, target_key(target),
                         compiler_key(target), kerneldsl_version())

    @property
    def digest(self) -> str:
        text = json.dumps([self.workload, self.shapes, self.dtypes, self.target, self.compiler, self.version],
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def environment(self) -> str:
        """The key without the shapes: every record a build of this workload here could use."""
        text = json.dumps([self.workload, self.dtypes, self.target, self.compiler, self.version], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


__all__ = ["RecordKey", "Workload", "compiler_key", "shapes_of", "structural_hash", "target_key"]
