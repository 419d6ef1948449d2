"""Launching a ``@triton.jit`` kernel again through the compiled kernel Triton chose for the same arguments.

Every call of ``kernel[grid](*args, **meta)`` goes through ``JITFunction.run``: it binds the arguments, computes
each one's specialization (dtype and 16-byte alignment of a pointer, divisibility by 16 and width of an integer),
builds the cache key, looks the compiled kernel up and finally calls its C launcher. For the small feature maps of
a ResNet's later stages that Python work (about 10 us a launch) is a large share of a whole EvoNorm step, which is
bound by the host.

:class:`Launcher` keeps, for each distinct call, the compiled kernel's own launcher (``CompiledKernel[grid]``,
Triton's API for launching a kernel it has compiled) and calls it directly the next time. The first call with a
given key goes through ``JITFunction.run`` as usual (compiling if needed), and what it returns is cached under a key
that is at least as fine as Triton's specialization:

* a tensor contributes its dtype and whether its address is a multiple of 16 bytes (Triton's pointer
  specialization; a view at an odd offset gets its own entry);
* any other argument contributes its type and exact value (Triton specializes integers on their value's
  divisibility by 16, on being 1 and on their width, all functions of the value; floats are never specialized);
* the keyword arguments (constexprs and compile options), the grid and the current device.

So a cached launcher is only reused for arguments Triton itself would have sent to the same compiled kernel, and
the direct call passes the C launcher exactly the arguments ``JITFunction.run`` would (the grid, the current
stream, the kernel's handle and metadata, the launch hooks, then every parameter in order, constexprs included):
``shared/triton_launch_check.py`` and a test compare both calls, argument by argument, on a stand-in CUDA driver.
What the direct call skips is Triton's per-launch check that the kernel's global variables are unchanged (these
kernels read none) and any ``knobs`` change made after the first call (for example turning on Triton's debug mode:
set :data:`LAUNCH` to ``"triton"`` for that).

Under the Triton interpreter (``TRITON_INTERPRET=1``) kernels are not ``JITFunction`` objects and every call goes
through Triton; so does every call with a Triton outside :data:`CHECKED_TRITON` (the layout of the launcher's
arguments has changed between Triton releases before). The cache holds at most :data:`MAX_ENTRIES` launchers per
kernel (cleared when full).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

#: "direct": reuse the compiled kernel's launcher after the first call with the same key; "triton": always go
#: through ``JITFunction.run`` (for debugging, or for a Triton without ``CompiledKernel.__getitem__``).
LAUNCH = "direct"
MAX_ENTRIES = 1024


def _key_of(arg: Any) -> Any:
    if isinstance(arg, Tensor):
        return (arg.dtype, not arg.data_ptr() & 15)
    return (arg.__class__, arg)


class Launcher:
    """``launcher[grid](*args, **meta)``, like the ``@triton.jit`` function ``fn`` it wraps (see the module doc).

    Args:
        fn: the ``@triton.jit`` function (or, under the interpreter, whatever ``triton.jit`` returned).

    Example:
        Anything that is not a ``JITFunction`` (the interpreter's kernels, here a stand-in) is called as it is:

        >>> calls = []
        >>> class StandIn:
        ...     def __getitem__(self, grid):
        ...         return lambda *args, **meta: calls.append((grid, args, meta))
        >>> Launcher(StandIn())[(4,)](1, 2.0, BLOCK=8)
        >>> calls
        [((4,), (1, 2.0), {'BLOCK': 8})]
    """

    __slots__ = ("_device", "_direct", "_names", "cache", "fn")

    def __init__(self, fn: Any) -> None:
        from triton.runtime.jit import JITFunction

        self.fn = fn
        self._direct = isinstance(fn, JITFunction) and _checked_triton()
        self._names = tuple(getattr(fn, "arg_names", ()))
        self.cache: dict[Any, tuple[Any, tuple[str, ...]]] = {}
        self._device: Any = None

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        return lambda *args, **meta: self.launch(grid, args, meta)

    def launch(self, grid: tuple[int, ...], args: tuple[Any, ...], meta: dict[str, Any]) -> Any:
        """Launch ``fn`` over ``grid``; returns what Triton's launch returned on the slow path, else None."""
        if LAUNCH != "direct":
            if LAUNCH != "triton":
                raise ValueError(f"sciml_norm._kernels._launch.LAUNCH must be 'direct' or 'triton', got {LAUNCH!r}")
            return self.fn[grid](*args, **meta)
        if not self._direct:
            return self.fn[grid](*args, **meta)
        if self._device is None:
            from triton.runtime import driver

            self._device = driver.active.get_current_device  # pyright: ignore[reportAttributeAccessIssue]
        key = (grid, self._device(), tuple(meta.items()), *map(_key_of, args))
        entry = self.cache.get(key)
        if entry is not None:
            runner, rest = entry
            runner(*args, *[meta[name] for name in rest])
            return None
        compiled = self.fn[grid](*args, **meta)  # compiles on a miss of Triton's own cache, and launches
        rest = self._names[len(args) :]
        if isinstance(compiled, _compiled_kernel_class()) and all(name in meta for name in rest):
            if len(self.cache) >= MAX_ENTRIES:
                self.cache.clear()
            self.cache[key] = (compiled[(*grid, 1, 1)[:3]], rest)  # its launcher indexes three grid axes
        return compiled


def _compiled_kernel_class() -> type:
    from triton.compiler import CompiledKernel

    return CompiledKernel


#: Triton versions (major, minor) whose launch path ``shared/triton_launch_check.py`` has compared with the direct
#: one (3.3, 3.4, 3.5, 3.6, 3.8 and 3.9; 3.7 lies between); any other version takes Triton's own path (3.2's C
#: launcher takes the arguments without the constexprs, which the direct call passes).
CHECKED_TRITON = ((3, 3), (3, 9))


def _checked_triton() -> bool:
    import triton

    try:
        version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    except ValueError:
        return False
    low, high = CHECKED_TRITON
    return low <= version <= high and hasattr(_compiled_kernel_class(), "__getitem__")
