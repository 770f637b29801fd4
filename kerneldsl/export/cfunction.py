"""One exported function as a self-contained translation unit: its kernels and the documented
entry points a C (or CUDA) caller uses without Python.

    fs = function_source(spec.forward, "c")      # or "cuda"
    fs.text          the .c (.cu) file: the kernels as kd.build renders them, then the entry points
    fs.prototypes    their declarations, for the header
    fs.describe()    the header's comment: arguments, dtypes, symbolic shapes, error codes

Entry points of a function `f` with inputs X, W and output Y (each array: data pointer, shape,
strides in elements; NULL strides mean row-major):

    int f_shapes(const int64_t *X_shape, const int64_t *W_shape, int64_t *Y_shape, int64_t *workspace_bytes);
    int f(const float *X, const int64_t *X_shape, const int64_t *X_strides, ...,
          float *Y, const int64_t *Y_shape, const int64_t *Y_strides,
          void *workspace, int64_t *bad_index [, void *cuda_stream]);
    const char *f_error(int code);

They return 0 or an error code, never abort: negative codes are the entry point's own checks
(shapes that disagree, a NULL pointer, an output overlapping an input, no memory, a CUDA error),
positive ones the kernels' checks (an index out of range), each with its message. The kernels
are the very source kd.build compiles; the entry points do in C what the Python callable does
(runtime/callable.py): bind the sizes from the shapes, check them, lay out strides (zero strides
and a dummy pointer for empty arrays), allocate the temporaries, run, report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..codegen.c import CTYPE, CPrinter, environment, source_names
from ..ir import expr as E
from ..ir.lower import BoundsError, NegativeShape
from ..ir.tensor import SizeCheck
from ..target import Target
from .spec import Signature

ITEMSIZE = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "bool": 1}
# element types in the header: bool arrays are bytes (0 or 1) on both sides
HEADER_CTYPE = {**CTYPE, "bool": "uint8_t"}
ERRORS = {  # the entry points' own codes: (name, meaning; what *bad_index then holds)
    -1: ("SHAPE", "an array's shape disagrees with the sizes bound from the arrays before it; *bad_index: "
                  "the array's position among the arguments (inputs, then outputs)"),
    -2: ("NEGATIVE", "an output or intermediate would have a negative dimension (the inputs are too small); "
                     "*bad_index: the output's position, or -1 for an intermediate"),
    -3: ("NULL", "a NULL data pointer for a non-empty array; *bad_index: its position among the arguments"),
    -4: ("ALIAS", "an output overlaps an input, another output or itself; *bad_index: its position"),
    -5: ("ALLOC", "no memory for the intermediates (pass a workspace of f_shapes' size to avoid allocating)"),
    -6: ("CUDA", "a CUDA call failed; *bad_index: the cudaError_t"),
    -7: ("SIZE", "an array's size in bytes (its shape, or its strides' reach, times the item size) overflows "
                 "int64; *bad_index: its position among the arguments"),
}
_RESERVED = re.compile(r"^(kd_|s_|st_|b_|v_|l_)|^(int|char|float|double|void|bool|const|static|return|if|else|"
                       r"for|while|do|switch|case|default|break|continue|struct|union|enum|typedef|"
                       r"sizeof|auto|register|extern|volatile|signed|unsigned|short|long|goto|inline|restrict|"
                       r"class|namespace|template|new|delete|this|operator|private|public|protected|virtual|"
                       r"friend|try|catch|throw|using|typename|true|false|nullptr|main|workspace|bad_index|"
                       r"stream|dim3)$")


@dataclass(frozen=True)
class ArrayArg:
    """One array argument of the entry point: data pointer, shape and strides parameters."""
    tensor: object
    role: str  # input | output
    name: str  # what the header and metadata call it
    data: str
    shape: str
    strides: str

    @property
    def ctype(self) -> str:
        return HEADER_CTYPE[self.tensor.dtype]

    def declaration(self) -> str:
        const = "const " if self.role == "input" else ""
        return (f"{const}{self.ctype} *{self.data}, const int64_t *{self.shape}, "
                f"const int64_t *{self.strides}")


@dataclass(frozen=True)
class FunctionSource:
    symbol: str
    signature: Signature
    target: str  # c | cuda
    text: str
    prototypes: tuple
    arrays: tuple  # ArrayArg: inputs, then outputs
    messages: dict  # code -> message (the kernels' codes and the entry point's own)
    needs_sync: bool  # CUDA: the kernels check indices per element, so the entry point waits for them
    sizes: tuple  # (size name, "X.shape[0]") in the order of the sizes

    @property
    def suffix(self) -> str:
        return ".cu" if self.target == "cuda" else ".c"

    def describe(self, role: str = "") -> str:
        """The header's comment for this function."""
        sig = self.signature
        width = max(len(a.name) for a in self.arrays)
        outs = [a.name for a in self.arrays if a.role == "output"]
        lines = [f"{self.symbol}: {role or 'function'} computing {', '.join(outs)} "
                 f"from {', '.join(t.name for t in sig.inputs) or 'nothing'}"]
        for title, role_name in (("inputs: ", "input"), ("outputs:", "output")):
            for k, a in enumerate(x for x in self.arrays if x.role == role_name):
                shape = "[" + ", ".join(str(d) for d in a.tensor.shape) + "]"
                lines.append(f"  {title if k == 0 else ' ' * len(title)} {a.name:<{width}}  "
                             f"{a.tensor.dtype:<7}  {shape}")
        if self.sizes:
            lines.append("  sizes:   " + ", ".join(f"{n} = {src}" for n, src in self.sizes))
        checks = sorted(c for c in self.messages if c > 0)
        lines.append(f"  returns 0, an _ERR_ code above, or one of its kernels' checks ({self.symbol}_error(code))"
                     + (":" if checks else ": none"))
        for code in checks:
            lines.append(f"    {code:>3}  {self.messages[code]}")
        return "\n".join(lines)


def c_string(text: str) -> str:
    """A C string literal of `text` (ASCII; anything else escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127 and ch != "?":  # `?` escaped: no trigraphs
            out.append(ch)
        else:
            for b in ch.encode():
                out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def comment(text: str) -> str:
    """Text safe inside a C comment."""
    return text.replace("*/", "* /").replace("/*", "/ *")


def kernel_messages(module) -> dict:
    """{code: message} for the kernels' checks, with symbolic sizes (no values at hand in C)."""
    out = {}
    for code, info in sorted(module.errors.items()):
        if isinstance(info, SizeCheck):
            out[code] = info.message.format(a=info.a, b=info.b)
        elif isinstance(info, NegativeShape):
            out[code] = (f"{info.tensor} would have a negative dimension (shape ({', '.join(map(str, info.shape))})); "
                         f"the inputs are too small for this computation")
        elif isinstance(info, BoundsError) and info.lo is not None:
            out[code] = (f"{info.op} reads {info.load}: the index in dimension {info.dim} ranges over "
                         f"[{info.lo}, {info.hi}] but {info.tensor} has size {info.extent} there; the inputs are "
                         f"too small for this computation")
        elif isinstance(info, BoundsError):
            out[code] = (f"{info.op} reads {info.load}: an index in dimension {info.dim} is out of range "
                         f"[0, {info.extent}) for {info.tensor} (*bad_index holds it); nothing was read outside "
                         f"the array")
        else:
            out[code] = f"kernel check {code} failed"
    return out


def _array_args(sig: Signature) -> tuple:
    used: set = set()

    def fresh(base: str) -> str:
        if _RESERVED.match(base):  # a prefix or word of the generated code's own: every suffix would be too
            base = f"arg_{base}"
        name, k = base, 0
        while name in used or _RESERVED.match(name):
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    args = []
    named = [(t, t.name, "input") for t in sig.inputs]
    named += [(t, sig.output_name(k), "output") for k, t in enumerate(sig.outputs)]
    for t, name, role in named:
        data = fresh(name)
        args.append(ArrayArg(t, role, name, data, fresh(f"{data}_shape"), fresh(f"{data}_strides")))
    return tuple(args)


def _bind_lines(sig: Signature, module, arrays, printer) -> tuple[list, tuple]:
    """C lines binding kd_s[] from the inputs' shapes and checking every dimension, then the
    output and intermediate shapes into kd_shapes[]: (lines, (size name, its source))."""
    slot = {s: k for k, s in enumerate(module.sizes)}
    names = printer.var_names
    lines, bound = [], {}
    for k, (p, a) in enumerate(zip(sig.inputs, arrays)):
        for d, dim in enumerate(p.shape):
            if isinstance(dim, E.SizeVar) and dim not in bound:
                bound[dim] = (k, d)
                lines.append(f"kd_s[{slot[dim]}] = {a.shape}[{d}];  /* {dim.name} */")
                lines.append(f"if (kd_s[{slot[dim]}] < 0) {{ *kd_arg = {k}; return KD_ERR_SHAPE; }}")
    lines += [f"const int64_t {names[s]} KD_UNUSED = kd_s[{slot[s]}];" for s in module.sizes]
    for k, (p, a) in enumerate(zip(sig.inputs, arrays)):
        for d, dim in enumerate(p.shape):
            if bound.get(dim) != (k, d):
                lines.append(f"if ({a.shape}[{d}] != {printer.expr(dim)}) {{ *kd_arg = {k}; return KD_ERR_SHAPE; }}")
    pos = 0
    tensors = list(sig.outputs) + [module.tensors[b] for b in module.temps]
    for n, t in enumerate(tensors):
        which = n if n < len(sig.outputs) else -1
        for dim in t.shape:
            lines.append(f"kd_shapes[{pos}] = {printer.expr(dim)};")
            lines.append(f"if (kd_shapes[{pos}] < 0) {{ *kd_arg = {which}; return KD_ERR_NEGATIVE; }}")
            pos += 1
    sources = tuple((s.name, f"{sig.inputs[bound[s][0]].name}.shape[{bound[s][1]}]") for s in module.sizes)
    return lines, sources


def function_source(sig: Signature, target: str = "c", schedule=None) -> FunctionSource:
    """The translation unit of `sig` for target "c" or "cuda" (kernels rendered as kd.build would)."""
    from ..runtime.cache import kerneldsl_version
    from ..schedule.schedule import schedule as make_schedule
    kind = Target.resolve(target).kind
    if kind not in ("c", "cuda"):
        raise ValueError(f"export: target must be 'c' or 'cuda', got {target!r}")
    s = schedule if schedule is not None else make_schedule(list(sig.outputs), list(sig.inputs), target=kind)
    module = s.module
    version = f"{kerneldsl_version()}; config {s.config.digest()}"
    symbol = sig.name
    arrays = _array_args(sig)
    names, _ = source_names(module)
    printer = CPrinter(names, {})
    printer.saturate = True  # host size arithmetic: an absurd size fails a check instead of wrapping
    bind, sizes = _bind_lines(sig, module, arrays, printer)
    messages = kernel_messages(module)
    messages.update({code: f"{name.lower()}: {text}" for code, (name, text) in ERRORS.items()})
    per_element = any(isinstance(i, BoundsError) and i.lo is None for i in module.errors.values())
    temps = [module.tensors[b] for b in module.temps]
    ctx = dict(sym=symbol, arrays=arrays, inputs=[a for a in arrays if a.role == "input"],
               outputs=[a for a in arrays if a.role == "output"], bind=bind, cuda=kind == "cuda",
               nsizes=len(module.sizes), nshapes=sum(t.ndim for t in list(sig.outputs) + temps),
               ndims=[a.tensor.ndim for a in arrays], itemsizes=[ITEMSIZE[a.tensor.dtype] for a in arrays],
               out_ndims=sum(t.ndim for t in sig.outputs),
               temp_ndims=[t.ndim for t in temps], temp_itemsizes=[ITEMSIZE[t.dtype] for t in temps],
               errors={code: name for code, (name, _) in ERRORS.items()},
               messages=[(code, c_string(m)) for code, m in sorted(messages.items())],
               needs_sync=per_element, c_string=c_string)
    if kind == "cuda":
        from ..codegen.cuda import render
        cu = render(module, s.target, version)
        # each function is its own translation unit; their kernels' (extern "C") names must not meet
        kernels_text = cu.text.replace("kd_kernel_", f"kd_kernel_{symbol}_")
        ctx.update(launches=_launches(cu.launches, symbol, printer, module),
                   checks=[{"cond": printer.expr(c.cond), "code": c.code} for c in module.checks],
                   c_prelude=environment().get_template("c/prelude.h").render())
    else:
        from ..codegen.c import render
        text = render(module, s.target, version)
        kernels_text = re.sub(r"(?m)^int kd_entry\(", f"static int kd_entry_{symbol}(", text, count=1)
        if kernels_text == text:
            raise RuntimeError("export: the generated C has no kd_entry definition to wrap")
        # several functions link into one library: their thread reports stay their own
        kernels_text = re.sub(r"(?m)^void kd_threads\(", f"static KD_UNUSED void kd_threads_{symbol}(",
                              kernels_text)
    wrapper = environment().get_template("export/function.j2").render(**ctx)
    prototypes = tuple(environment().get_template("export/prototypes.j2").render(**ctx).strip().split("\n"))
    return FunctionSource(symbol, sig, kind, kernels_text + "\n" + wrapper, prototypes, arrays, messages,
                          per_element, sizes)


def _launches(launches, symbol: str, printer, module) -> list:
    """The host's view of each kernel launch (runtime/cuda.py's GpuFunction._run, in C)."""
    out = []
    for L in launches:
        args = []
        for p in L.params:
            if p.kind in ("size", "stride"):
                args.append(f"kd_meta[{p.index}]")
            elif p.kind == "buf":
                args.append(f"({p.ctype})kd_bufs[{p.index}]")
            else:
                args.append("kd_report")
        per = L.threads * L.lanes if L.schedule == "grid_stride" else 1
        out.append(dict(name=L.kernel.replace("kd_kernel_", f"kd_kernel_{symbol}_"), schedule=L.schedule,
                        threads=L.threads, per=per, max_blocks=L.max_blocks, work=printer.expr(L.work),
                        extents=[printer.expr(e) for e in L.index_extents],
                        runs_if=None if L.runs_if is None else printer.expr(L.runs_if), args=args))
    return out


__all__ = ["ERRORS", "ArrayArg", "FunctionSource", "c_string", "function_source", "kernel_messages"]
