"""What a new user meets first: declared dependencies and install hints, the build's GPU
detection, the CPU-only-JAX warning, CLIs that refuse GPU-sized work on a CPU and report
progress, ``explain`` for any backend, and the README's commands and code."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jax_gna
from jax_gna import profile

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10
    tomllib = None


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# ----------------------------------------------------------------------------------------
# Dependencies: every third-party import is declared, optional ones come with a hint
# ----------------------------------------------------------------------------------------

# Import names that differ from their distribution's name.
_DIST_OF_MODULE = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs tomllib (Python >= 3.11)")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs}
              for name, reqs in project.get("optional-dependencies", {}).items()}
    return core, extras


def _sources() -> list[Path]:
    files = sorted((REPO / "jax_gna").rglob("*.py"))
    for folder in ("examples", "benchmarks", "scripts", "tests"):
        files += sorted((REPO / folder).glob("*.py"))
    return files


def _top_level_imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(top-level module, node, guarded) for every absolute import in ``path``; guarded:
    inside a function, or inside a ``try`` that handles ImportError/ModuleNotFoundError."""
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def handles_import_error(node: ast.Try) -> bool:
        for handler in node.handlers:
            names = []
            if handler.type is None:
                return True
            for t in (handler.type.elts if isinstance(handler.type, ast.Tuple)
                      else [handler.type]):
                names.append(getattr(t, "id", getattr(t, "attr", "")))
            if {"ImportError", "ModuleNotFoundError", "Exception"} & set(names):
                return True
        return False

    def visit(node, guarded):
        for child in ast.iter_child_nodes(node):
            g = guarded
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                g = True
            if isinstance(child, ast.Try) and handles_import_error(child):
                # Only the try body is guarded, not the handlers.
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for part in child.handlers + child.orelse + child.finalbody:
                    visit_stmt(part, guarded)
                continue
            visit_stmt(child, g)

    def visit_stmt(node, guarded):
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], node, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], node, guarded))
        visit(node, guarded or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return out


def _third_party(module: str, path: Path) -> bool:
    if module in sys.stdlib_module_names or module in ("__future__", "jax_gna", "benchmarks"):
        return False
    local = path.parent / module
    return not (local.with_suffix(".py").exists() or local.is_dir())


def _distribution(module: str) -> str:
    if module in _DIST_OF_MODULE:
        return _DIST_OF_MODULE[module]
    dists = importlib.metadata.packages_distributions().get(module)
    return _norm(dists[0]) if dists else _norm(module)


def test_every_third_party_import_is_declared():
    core, extras = _declared()
    declared = core.union(*extras.values())
    # jax[cuda13] etc. name jax itself; jaxlib ships with it.
    missing = []
    for path in _sources():
        for module, node, _ in _top_level_imports(path):
            if _third_party(module, path) and _distribution(module) not in declared:
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert not missing, ("imports of undeclared packages (add them to pyproject.toml's "
                         "dependencies or an extra):\n" + "\n".join(missing))


def test_optional_imports_are_guarded():
    """A package from an extra only, imported at module level by the library, an example or
    a CLI, must sit in a try that turns its absence into an install hint."""
    core, extras = _declared()
    optional = set().union(*extras.values()) - core
    assert {"tqdm", "optax", "matplotlib"} <= optional    # what the checks below rely on
    unguarded = []
    for path in _sources():
        if path.parent.name in ("tests", "scripts"):
            continue
        for module, node, guarded in _top_level_imports(path):
            if (_third_party(module, path) and _distribution(module) in optional
                    and not guarded):
                unguarded.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert not unguarded, "\n".join(unguarded)


def _run_without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``module`` cannot be imported."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, env=_env(), cwd=REPO, timeout=300)


def test_example_without_its_extra_says_what_to_install():
    out = _run_without("tqdm", "import runpy; runpy.run_path('examples/nat_classifier.py', "
                               "run_name='__main__')")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tqdm" in lines[0] and "pip install" in lines[0], out.stderr


def test_simulator_plot_without_matplotlib_says_what_to_install(tmp_path):
    out = _run_without("matplotlib", "from jax_gna.simulator.cli import main; "
                       f"raise SystemExit(main(['--shape', '16', '16', '--window', '5', "
                       f"'--plot', {str(tmp_path / 'x.png')!r}]))")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install matplotlib" in lines[0], out.stderr
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------
# Build: which kernel families the GPUs of the machine get (cmake/jax_gna_gpus.cmake)
# ----------------------------------------------------------------------------------------

_PROBE = """include("${SRC}/cmake/jax_gna_gpus.cmake")
jax_gna_detected_families(families found)
message("families=[${families}] found=[${found}]")
"""


def _detected(tmp_path: Path, fake_smi: str | None) -> tuple[str, str]:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("no cmake on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if fake_smi is not None:
        smi.write_text("#!/bin/sh\n" + fake_smi + "\n")
        smi.chmod(0o755)
    elif smi.exists():
        smi.unlink()
    probe = tmp_path / "probe.cmake"
    probe.write_text(_PROBE)
    # Only the fake nvidia-smi (and the shell it needs) on PATH.
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    out = subprocess.run([cmake, f"-DSRC={REPO}", "-P", str(probe)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"families=\[(.*?)\] found=\[(.*?)\]", out.stderr)
    return m.group(1), m.group(2)


@pytest.mark.parametrize("smi, families", [
    ("echo 9.0", "80;90a"),                      # Hopper: portable + Hopper-only family
    ("printf '9.0\\n8.0\\n'", "80;90a"),          # H100 + A100
    ("echo 8.6", "80"),                          # Ampere / Ada: portable only
    ("echo 12.0", "80"),                         # newer: portable family through its PTX
    ("echo 7.5", ""),                            # too old for any kernel: CPU part only
    ("echo 'No devices were found'; exit 6", ""),
    (None, ""),                                  # no nvidia-smi at all
])
def test_build_detects_the_kernel_families_of_this_machines_gpus(tmp_path, smi, families):
    got, found = _detected(tmp_path, smi)
    assert got == families, found
    if not families:
        assert "8.0 or newer" in found or "no NVIDIA GPU" in found


def test_no_gpu_build_says_how_to_force_the_kernels():
    text = (REPO / "CMakeLists.txt").read_text()
    line = next(x for x in text.splitlines() if "set(_force_hint" in x)
    assert "JAX_GNA_CUDA_ARCHS" in line and "JAX_GNA_BUILD_CUDA=1" in line


def test_ci_forces_every_kernel_family_and_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r'export JAX_GNA_CUDA_ARCHS="80;90a"', ci)
    assert ci.index("JAX_GNA_CUDA_ARCHS") < ci.index("README test command")
    ci_cmd = ci.split("README test command", 1)[1].splitlines()[1].strip()
    readme_cmd = _readme_block_after("### Run the tests", "bash").strip()
    assert ci_cmd == readme_cmd and "-rs" in readme_cmd.split()
    assert '{"sm80", "sm90"} <= set(families)' in ci


# ----------------------------------------------------------------------------------------
# import jax_gna on a GPU machine with a CPU-only JAX
# ----------------------------------------------------------------------------------------


def test_cpu_only_jax_on_a_gpu_machine_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    (gpus / "0000:01:00.0").mkdir()
    absent = ("jax_gna_no_such_plugin",)
    message = jax_gna._cpu_only_jax_on_gpu_machine((str(gpus),), absent)
    assert message is not None and 'pip install -U "jax[cuda13]"' in message
    # A CUDA plugin present, no GPU, an empty driver dir, or JAX_PLATFORMS=cpu: silent.
    assert jax_gna._cpu_only_jax_on_gpu_machine((str(gpus),), ("json",)) is None
    assert jax_gna._cpu_only_jax_on_gpu_machine((str(tmp_path / "none"),), absent) is None
    (tmp_path / "empty").mkdir()
    assert jax_gna._cpu_only_jax_on_gpu_machine((str(tmp_path / "empty"),), absent) is None
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert jax_gna._cpu_only_jax_on_gpu_machine((str(gpus),), absent) is None


# ----------------------------------------------------------------------------------------
# explain: reasons for every backend on every platform
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sm80", "sm90", "halo"])
def test_explain_answers_for_a_kernel_backend_on_cpu(backend):
    q = jax.ShapeDtypeStruct((1, 16, 16, 2, 64), jnp.bfloat16)
    choice = jax_gna.explain(q, q, q, (5, 5), backend=backend, platform="cpu")
    assert choice["fwd"].startswith("error (") and "is not CUDA" in choice["fwd"]
    assert "backend=None would use reference" in choice["fwd"]
    assert choice["bwd"]          # sm90 has no backward: reference, with the reason
    with pytest.raises(ValueError, match="backend must be one of"):
        jax_gna.explain(q, q, q, (5, 5), backend="tpu9000", platform="cpu")


# ----------------------------------------------------------------------------------------
# CLIs: GPU-sized work on a CPU, progress
# ----------------------------------------------------------------------------------------

README_PROFILE = ["-i", "30", "48", "80", "-w", "18", "24", "24", "-s", "16", "8", "8"]


def test_profile_refuses_gpu_sized_problem_on_cpu(monkeypatch, capsys):
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    called = []
    assert profile.main(README_PROFILE, attention_fn=lambda *a, **k: called.append(1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GPU-sized" in err[0] and "--force" in err[0], err
    assert "benchmarks/run.py --tiny" in err[0] and not called
    suggestion = re.search(r"python -m jax_gna\.profile ([^)]*)\)", err[0]).group(1).split()
    args = profile.build_parser().parse_args(suggestion)
    small = profile.ProfileConfig.create(args.input_size, args.window, args.stride,
                                         heads=args.heads, head_dim=args.head_dim)
    assert len(small.shape) == 3
    assert profile.cpu_size_refusal(small, ["auto", "xla-dense"], platform="cpu") is None


def test_cpu_size_refusal_only_on_cpu():
    big = profile.ProfileConfig.create((30, 48, 80), (18, 24, 24), (16, 8, 8))
    assert profile.cpu_size_refusal(big, ["auto"], platform="cpu") is not None
    assert profile.cpu_size_refusal(big, ["auto", "xla-dense"], platform="gpu") is None
    tiny = profile.ProfileConfig.create((8, 12), (4, 6), heads=2, head_dim=16)
    assert profile.cpu_size_refusal(tiny, ["auto", "xla-dense"], platform="cpu") is None
    assert profile.scaled_down(tiny) == profile.ProfileConfig.create(
        (8, 12), (4, 6), heads=2, head_dim=16)


def _standin(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False, scale=None, **kw):
    return v * 1.0


SMALL = ["-i", "8", "12", "-w", "4", "6", "--heads", "2", "--head-dim", "16", "--warmup",
         "1", "--repeats", "2", "--input-sets", "1"]


def test_profile_reports_progress_on_stderr(capsys):
    assert profile.main(SMALL + ["--json", "--dense"], attention_fn=_standin) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)                       # stdout stays one JSON object
    lines = captured.err.splitlines()
    assert any("gna[auto]: compile" in x for x in lines), lines
    assert any("gna[auto]: median" in x for x in lines), lines
    assert any("xla-dense: median" in x for x in lines), lines
    assert all(re.match(r"\[\s*\d+\.\d s\] ", x) for x in lines), lines
    assert profile.main(SMALL + ["--quiet"], attention_fn=_standin) == 0
    assert capsys.readouterr().err == ""


def test_benchmarks_refuse_full_suite_on_cpu_and_report_progress(tmp_path):
    if jax.default_backend() != "cpu":
        pytest.skip("the refusal applies to a CPU backend")
    run = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--out", str(tmp_path)]
    out = subprocess.run(run + ["--subset"], capture_output=True, text=True, env=_env(),
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 2 and "--tiny" in out.stderr.splitlines()[-1], out.stderr
    assert not (tmp_path / "results.json").exists()
    out = subprocess.run(run + ["--tiny", "--subset", "--cases", "seq32k", "--backends",
                                "reference", "xla-dense", "--repeats", "1", "--input-sets",
                                "1"], capture_output=True, text=True, env=_env(),
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "[1/3] seq32k fwd xla-dense: compile" in out.stderr, out.stderr
    assert "[2/3] seq32k fwd stride 64 reference: median" in out.stderr, out.stderr
    help_text = subprocess.run(run + ["--help"], capture_output=True, text=True, env=_env(),
                               timeout=300).stdout
    assert "--tiny" in help_text and "CPU" in help_text


# ----------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------


def _readme_block_after(heading: str, lang: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_readme_install_and_test_commands():
    text = README.read_text()
    assert "python -m pip install . && python examples/quickstart.py" in text
    for doc in ("docs/semantics.md", "docs/performance.md", "docs/ARCHITECTURE.md",
                "docs/SHARDING.md"):
        assert doc in text
    # Every Markdown file the README links to is in the repository.
    import re
    for doc in set(re.findall(r"\]\(([\w./-]+\.md)", text)):
        assert (README.parent / doc).exists(), doc
    assert "--tiny" in text and 'jax[cuda13]' in text


def test_readme_python_snippets_run():
    """Every ```python block of the README runs as written (on whatever JAX finds)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
