"""Loads the native parts of jax_gna and registers their XLA FFI targets with JAX.

Two optional pieces, both built by ``pip install .`` (CMakeLists.txt):

* ``jax_gna._gna_ext`` -- pybind11 module with the CPU targets (``gna_window_bounds``,
  ``gna_tile_map``, ``gna_tile_interior``: the C++ window math, for tests).
* ``libjax_gna_cuda.so`` -- the CUDA kernels and their FFI handlers. It links no Python, so it
  is loaded with ctypes: from ``$JAX_GNA_CUDA_LIBRARY`` when set, else from the package dir.
  Its handler symbols (``CUDA_TARGETS``) are registered for platform ``"CUDA"``, and its
  ``jax_gna_compiled_kernels()`` lists what this build compiled.

Nothing here may make ``import jax_gna`` fail: a missing or broken piece is recorded (see
``load_error``), logged at debug level on logger ``jax_gna``, and the package falls back to the
pure-JAX reference. Loading happens once, on first use of any helper below, and is
thread-safe.

When the package is imported from a source checkout that has no binaries (e.g. running the
tests from the repository root, where ``python -m pytest`` puts the checkout first on
``sys.path``), the binaries of an installed ``jax_gna`` distribution are used instead, so
tests still exercise what ``pip install .`` built.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

__all__ = [
    "CPU_EXTENSION_MODULE",
    "CUDA_LIBRARY_NAME",
    "CUDA_LIBRARY_ENV",
    "CUDA_TARGETS",
    "COMPILED_KERNELS_SYMBOL",
    "cpu_extension_available",
    "cuda_library_available",
    "cpu_targets",
    "cuda_targets",
    "cuda_library_path",
    "compiled_kernels",
    "compiled_kernels_raw",
    "extension_version",
    "load_error",
    "ensure_loaded",
]

logger = logging.getLogger("jax_gna")

CPU_EXTENSION_MODULE = "jax_gna._gna_ext"
CUDA_LIBRARY_NAME = "libjax_gna_cuda.so"
CUDA_LIBRARY_ENV = "JAX_GNA_CUDA_LIBRARY"
# XLA custom-call target name -> handler symbol exported by libjax_gna_cuda.so.
CUDA_TARGETS = {"gna_fwd": "JaxGnaFwd", "gna_bwd": "JaxGnaBwd"}
# extern "C" const char* jax_gna_compiled_kernels(): one line per kernel instantiation.
COMPILED_KERNELS_SYMBOL = "jax_gna_compiled_kernels"

_PACKAGE_DIR = Path(__file__).resolve().parent


class _State:
    """What loading found; filled once under ``_lock``."""

    def __init__(self) -> None:
        self.loaded = False
        self.cpu_module: ModuleType | None = None
        self.cpu_targets: tuple[str, ...] = ()
        self.cpu_error: str | None = None
        self.cuda_lib: ctypes.CDLL | None = None  # kept referenced: never unloaded
        self.cuda_path: Path | None = None
        self.cuda_targets: tuple[str, ...] = ()
        self.cuda_error: str | None = None
        self.kernels_raw: str = ""


_state = _State()
_lock = threading.Lock()


def _installed_package_dir() -> Path | None:
    """The package dir of an installed ``jax_gna`` distribution, if it is not this one."""
    try:
        dist = importlib.metadata.distribution("jax_gna")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("jax_gna"))).resolve()
    if not path.is_dir() or path == _PACKAGE_DIR:
        return None
    return path


def _load_module_from_dir(directory: Path) -> ModuleType | None:
    """Import ``jax_gna._gna_ext`` from the binary in ``directory`` (None if there is none).

    Only file names this interpreter can load (its extension suffixes) are considered, so a
    module built for another Python version is ignored rather than failing.
    """
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"_gna_ext{suffix}"
        if not candidate.is_file():
            continue
        spec = importlib.util.spec_from_file_location(CPU_EXTENSION_MODULE, candidate)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[CPU_EXTENSION_MODULE] = module
        return module
    return None


def _import_cpu_module() -> ModuleType:
    try:
        return importlib.import_module(CPU_EXTENSION_MODULE)
    except ImportError as own_error:
        installed = _installed_package_dir()
        module = _load_module_from_dir(installed) if installed is not None else None
        if module is None:
            raise
        logger.debug("jax_gna: %s not importable from %s (%s); using the installed copy in %s",
                     CPU_EXTENSION_MODULE, _PACKAGE_DIR, own_error, installed)
        return module


def _load_cpu(state: _State) -> None:
    try:
        module = _import_cpu_module()
    except Exception as e:  # ImportError, or a broken binary (undefined symbol, ...)
        state.cpu_error = (f"cannot import {CPU_EXTENSION_MODULE} "
                           f"({type(e).__name__}: {e}); build it with `pip install .`")
        logger.debug("jax_gna: %s", state.cpu_error)
        return
    try:
        import jax

        registered = []
        for name, capsule in module.registrations().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
            registered.append(name)
    except Exception as e:
        state.cpu_error = (f"{CPU_EXTENSION_MODULE} imported but registering its FFI targets "
                           f"failed ({type(e).__name__}: {e})")
        logger.debug("jax_gna: %s", state.cpu_error)
        return
    state.cpu_module = module
    state.cpu_targets = tuple(registered)
    logger.debug("jax_gna: registered CPU FFI targets %s from %s", registered,
                 getattr(module, "__file__", module))


def _cuda_library_candidates() -> tuple[list[Path], bool]:
    """Where to look for the CUDA library, and whether the user named it explicitly."""
    explicit = os.environ.get(CUDA_LIBRARY_ENV)
    if explicit:
        return [Path(explicit)], True
    candidates = [_PACKAGE_DIR / CUDA_LIBRARY_NAME]
    installed = _installed_package_dir()
    if installed is not None:
        candidates.append(installed / CUDA_LIBRARY_NAME)
    return candidates, False


def _load_cuda(state: _State) -> None:
    candidates, explicit = _cuda_library_candidates()
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        where = " or ".join(str(p) for p in candidates)
        state.cuda_error = (f"{CUDA_LIBRARY_NAME} not found at {where}"
                            + (f" (from ${CUDA_LIBRARY_ENV})" if explicit else
                               " (not built: no CUDA toolkit, JAX_GNA_BUILD_CUDA=0, "
                               "or no kernels yet)"))
        (logger.warning if explicit else logger.debug)("jax_gna: %s", state.cuda_error)
        return
    try:
        # RTLD_LOCAL: the library's symbols (and its static CUDA runtime) stay private to it;
        # JAX reaches the handlers only through the capsules registered below.
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
    except OSError as e:
        state.cuda_error = f"cannot load {path}: {e}"
        (logger.warning if explicit else logger.debug)("jax_gna: %s", state.cuda_error)
        return
    state.cuda_lib = lib
    state.cuda_path = path

    if hasattr(lib, COMPILED_KERNELS_SYMBOL):
        fn = getattr(lib, COMPILED_KERNELS_SYMBOL)
        fn.restype = ctypes.c_char_p
        fn.argtypes = []
        raw = fn()
        state.kernels_raw = raw.decode("utf-8") if raw else ""
    else:
        logger.debug("jax_gna: %s exports no %s(); no compiled kernels listed", path,
                     COMPILED_KERNELS_SYMBOL)

    registered = []
    errors = []
    try:
        import jax
    except Exception as e:
        state.cuda_error = f"cannot import jax to register CUDA targets: {e}"
        logger.debug("jax_gna: %s", state.cuda_error)
        return
    for target, symbol in CUDA_TARGETS.items():
        if not hasattr(lib, symbol):  # a build may have kernels for one direction only
            logger.debug("jax_gna: %s does not export %s; target %s not registered",
                         path, symbol, target)
            continue
        try:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="CUDA")
            registered.append(target)
        except Exception as e:
            errors.append(f"registering {target} ({symbol}) failed: {type(e).__name__}: {e}")
    state.cuda_targets = tuple(registered)
    if errors:
        state.cuda_error = f"{path}: " + "; ".join(errors)
        logger.debug("jax_gna: %s", state.cuda_error)
    logger.debug("jax_gna: loaded %s; registered CUDA targets %s; %d compiled kernels", path,
                 registered, len(_parse_kernel_lines(state.kernels_raw)))


def _parse_kernel_lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.splitlines() if line.strip()]


def ensure_loaded() -> None:
    """Load and register the native pieces (once; later calls return at once)."""
    if _state.loaded:
        return
    with _lock:
        if _state.loaded:
            return
        _load_cpu(_state)
        _load_cuda(_state)
        _state.loaded = True


def cpu_extension_available() -> bool:
    """True when the CPU FFI targets of ``jax_gna._gna_ext`` are registered with JAX."""
    ensure_loaded()
    return _state.cpu_module is not None


def cuda_library_available() -> bool:
    """True when ``libjax_gna_cuda.so`` is loaded and at least one CUDA target registered."""
    ensure_loaded()
    return _state.cuda_lib is not None and bool(_state.cuda_targets)


def cpu_targets() -> tuple[str, ...]:
    """Names of the registered CPU FFI targets."""
    ensure_loaded()
    return _state.cpu_targets


def cuda_targets() -> tuple[str, ...]:
    """Names of the registered CUDA FFI targets (a subset of ``CUDA_TARGETS``)."""
    ensure_loaded()
    return _state.cuda_targets


def cuda_library_path() -> Path | None:
    """Path of the loaded CUDA library, or None."""
    ensure_loaded()
    return _state.cuda_path


def compiled_kernels_raw() -> str:
    """The string ``jax_gna_compiled_kernels()`` returned ("" without the CUDA library)."""
    ensure_loaded()
    return _state.kernels_raw


def compiled_kernels() -> list[str]:
    """One entry per compiled kernel instantiation (non-empty lines of the raw string)."""
    return _parse_kernel_lines(compiled_kernels_raw())


def extension_version() -> str | None:
    """``__version__`` of the CPU extension module, or None when it is not loaded."""
    ensure_loaded()
    return getattr(_state.cpu_module, "__version__", None)


def load_error(component: str | None = None) -> str | None:
    """Why a native piece is unavailable, or None when it loaded.

    ``component``: ``"cpu"`` (the pybind11 module), ``"cuda"`` (the kernel library) or None
    (both, joined).
    """
    ensure_loaded()
    if component == "cpu":
        return _state.cpu_error
    if component == "cuda":
        return _state.cuda_error
    if component is not None:
        raise ValueError(f"component must be 'cpu', 'cuda' or None; got {component!r}")
    errors = [f"{name}: {err}" for name, err in (("cpu", _state.cpu_error),
                                                  ("cuda", _state.cuda_error)) if err]
    return "; ".join(errors) or None
