"""The errors kerneldsl raises at users. Each names the tensor/axis involved and the fix."""


class ShapeError(ValueError):
    """An input's rank or shape does not match the placeholder, or sizes disagree."""


class DTypeError(TypeError):
    """An input's dtype is not the placeholder's (kerneldsl never casts silently)."""


class CompileError(RuntimeError):
    """The C/CUDA compiler rejected generated source. Carries its message and the source path."""

    def __init__(self, message: str, source_path: str | None = None, compiler_output: str = ""):
        super().__init__(message)
        self.source_path = source_path
        self.compiler_output = compiler_output


class CacheError(CompileError):
    """The kernel cache cannot be used (not writable, full, untrusted, locked): says how to fix it."""


class DisconnectedInputError(ValueError):
    """kd.grad was asked for the gradient of an input the cost does not depend on (as Theano's:
    pass disconnected_inputs='ignore' or 'warn' for a zero gradient)."""


class ScheduleError(ValueError):
    """A schedule primitive was applied where it is not legal."""
