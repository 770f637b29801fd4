"""The default CPU schedule really vectorizes: the compiler's own report says so."""

import shutil
import subprocess

import pytest

import kerneldsl as kd
from kerneldsl.runtime.build import DEFAULT_CFLAGS

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def vectorized_lines(source: str, tmp_path) -> list[str]:
    """Lines of the generated source that gcc reports as vectorized loops."""
    src = tmp_path / "k.c"
    src.write_text(source)
    flags = [f for f in DEFAULT_CFLAGS if not f.startswith("-l")]
    r = subprocess.run(["cc", *flags, "-fopt-info-vec-optimized", "-c", str(src), "-o", str(tmp_path / "k.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = source.splitlines()
    lines = []
    for msg in r.stderr.splitlines():
        if "loop vectorized" in msg and msg.startswith(str(src)):
            lines.append(text[int(msg.split(":")[1]) - 1].strip())
    return lines


def test_elementwise_chain_with_transcendentals_is_vectorized(tmp_path):
    n = kd.size("n")
    x, y = kd.placeholder((n,), name="x"), kd.placeholder((n,), name="y")
    out = kd.compute((n,), lambda i: kd.tanh(x[i] * 1.5) * kd.sigmoid(y[i]) + kd.exp(x[i]), name="out")
    found = vectorized_lines(kd.build([x, y], [out]).source, tmp_path)
    assert any(ln.startswith("b_out[v_i * 1] =") for ln in found), found  # the contiguous loop


def test_row_sum_and_softmax_output_loop_are_vectorized(tmp_path):
    r_, c_ = kd.sizes("rows cols")
    X = kd.placeholder((r_, c_), name="X")
    r = kd.reduce_axis(c_, name="c")
    mx = kd.compute((r_,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    den = kd.compute((r_,), lambda i: kd.sum(kd.exp(X[i, r] - mx[i]), axis=r), name="den")
    sm = kd.compute((r_, c_), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="sm")
    found = vectorized_lines(kd.build([X], [sm]).source, tmp_path)  # gcc names the loop's statement
    assert any(ln.startswith("float v_acc1_t = kd_exp_f32(") for ln in found), found  # the row sum of exp
    assert any(ln.startswith("b_sm[v_i * st_sm_0 + v_j * 1] =") for ln in found), found  # the output row
    assert any(ln.startswith("#pragma omp simd reduction(max:") for ln in found), found  # the row max
