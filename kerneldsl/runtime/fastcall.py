"""The C call path of compiled functions (templates/c/fastcall.c), built once per Python and numpy.

`make(entry_address, slow, ...)` returns a FastCall: called with arrays like those of a call
the Python path remembered, it runs the kernels without Python in between (about a microsecond);
anything else goes to `slow`. None when the extension cannot be built here (no Python or numpy
headers, no compiler): calls then take the Python path, which does the same work.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
import sys
import sysconfig
from importlib import resources

import numpy as np

log = logging.getLogger("kerneldsl")

SINGLE, TUPLE, LIST = 0, 1, 2  # what a call returns: the one output, a tuple, a list


@functools.cache
def _module():
    from ..errors import CompileError
    from ..target import Target, host_identity
    from . import cache
    from .build import identity
    target = Target.detect("c")
    includes = [sysconfig.get_paths()["include"], np.get_include()]
    source = resources.files("kerneldsl").joinpath("templates/c/fastcall.c").read_text()
    cc = list(target.cc)
    recipe = cache.Recipe(
        ident=["fastcall", sys.version, np.__version__, host_identity(), identity(tuple(cc), "KERNELDSL_CC"),
               includes], source=source, src_suffix=".c", suffix=".so", name="fastcall", compiler_env="KERNELDSL_CC",
        command=lambda src, out: [*cc, "-O2", "-shared", "-fPIC", *(f"-I{d}" for d in includes), "-o", out, src])

    def load(a):
        spec = importlib.util.spec_from_file_location(
            "kerneldsl_fastcall", a.path, loader=importlib.machinery.ExtensionFileLoader("kerneldsl_fastcall", a.path))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    try:
        return cache.get(recipe, load)
    except (CompileError, OSError, ImportError) as e:
        log.info("kerneldsl: calls take the Python path (the C call path did not build: %s)",
                 str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def make(entry_address: int, slow, in_dtypes, in_ndims, out_dtypes, out_ndims, n_temps: int, returns: int):
    """A FastCall for one module's entry, or None (see the module's docstring)."""
    from ..settings import settings
    if not settings.fastcall:
        return None
    mod = _module()
    if mod is None:
        return None
    return mod.FastCall(entry_address, slow, [np.dtype(d).num for d in in_dtypes], list(in_ndims),
                        [np.dtype(d).num for d in out_dtypes], list(out_ndims), n_temps, returns)
