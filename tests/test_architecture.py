"""Architecture guarantees, checked on the source: layers, no cycles, no hidden imports, no Flax.

* only jaxwm.models and the Flax adapters import Flax, only the Equinox adapter imports Equinox
  (``FRAMEWORK_IMPORTS``);
* no jaxwm import inside a function or method (a hidden import hides a cycle);
* no module imports another jaxwm module's ``_private`` name;
* every module sits in one layer of ``LAYERS`` and imports only its own layer or lower ones;
* the module import graph is acyclic;
* ``import jaxwm`` loads neither the runner (ml_collections) nor Flax nor Equinox nor matplotlib.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jaxwm"

# The layer table, lowest first: a module may import only its own layer or lower layers. An
# entry names a module or a package (every module under it). Every jaxwm module must be here.
LAYERS = [
    ("base", ["jaxwm.errors", "jaxwm.stats", "jaxwm.version"]),
    ("engine+data", ["jaxwm.engine", "jaxwm.data"]),
    ("method", ["jaxwm.models", "jaxwm.triggers", "jaxwm.trigger_images", "jaxwm.manifest",
                "jaxwm.controls", "jaxwm.embed", "jaxwm.verify", "jaxwm.blackbox",
                "jaxwm.adapters"]),
    ("attacks", ["jaxwm.attacks"]),
    ("runner", ["jaxwm.runner"]),
    ("api", ["jaxwm"]),  # jaxwm/__init__.py: the curated public API
    ("cli", ["launch"]),
]  # fmt: skip

# The modules allowed to import each network framework, deliberately few: Flax is the ResNet
# and the Linen/NNX adapters; Equinox (an optional extra) only its own adapter, which nothing
# in jaxwm imports, so a user who never imports it never needs Equinox.
FRAMEWORK_IMPORTS = {
    "flax": {"jaxwm.models", "jaxwm.adapters.linen", "jaxwm.adapters.nnx"},
    "equinox": {"jaxwm.adapters.equinox"},
}

ALGORITHMS = [
    "jaxwm.engine.partition", "jaxwm.engine.train", "jaxwm.engine.loop", "jaxwm.embed",
    "jaxwm.verify", "jaxwm.triggers", "jaxwm.manifest", "jaxwm.attacks", "jaxwm.engine.parallel",
    "jaxwm.engine.sweep", "jaxwm.engine.checkpoint", "jaxwm.data", "jaxwm.engine",
    "jaxwm.runner.procpool",
]  # fmt: skip


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    mods["launch"] = ROOT / "launch.py"
    return mods


MODULES = _modules()


def _layer(module: str) -> int:
    best = None  # the longest matching entry wins (jaxwm.runner before jaxwm)
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (
                best is None or len(entry) > best[1]
            ):
                best = (i, len(entry))
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[0]


def _imports(module: str, path: Path):
    """(jaxwm module imported, names taken from it, node, inside a function) for each import."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "jaxwm":
                        out.append((alias.name, [], child, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                if base.split(".")[0] == "jaxwm":
                    for alias in child.names:
                        sub = f"{base}.{alias.name}"
                        if sub in MODULES:  # `from jaxwm.engine import loop`: a module
                            out.append((sub, [], child, in_function))
                        else:
                            out.append((base, [alias.name], child, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_jaxwm_import_inside_a_function():
    bad = [
        f"{_where(path, node)} imports {target}"
        for module, path in MODULES.items()
        for target, _, node, in_function in _imports(module, path)
        if in_function
    ]
    assert not bad, "jaxwm imports inside functions (move them to the top):\n" + "\n".join(bad)


def test_no_private_names_imported_across_modules():
    bad = []
    for module, path in MODULES.items():
        for target, names, node, _ in _imports(module, path):
            if target != module:
                bad += [
                    f"{_where(path, node)}: {target}.{n}"
                    for n in names
                    if n.startswith("_") and not n.endswith("__")
                ]  # dunders are public
            private_module = any(part.startswith("_") for part in target.split("."))
            # A private module (attacks._common) is for its own package only.
            if private_module and module.rpartition(".")[0] != target.rpartition(".")[0]:
                bad.append(f"{_where(path, node)}: private module {target}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_modules_import_only_their_layer_or_lower():
    bad = []
    for module, path in MODULES.items():
        for target, _, node, _ in _imports(module, path):
            if _layer(target) > _layer(module):
                bad.append(
                    f"{_where(path, node)}: {module} ({LAYERS[_layer(module)][0]}) imports "
                    f"{target} ({LAYERS[_layer(target)][0]})"
                )
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _, _ in _imports(module, path):
            # Importing jaxwm.a.b runs jaxwm/__init__ and jaxwm/a/__init__ first: an edge to each
            # package above the target, except the importer's own ancestors (already importing).
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != module and not module.startswith(dep + "."):
                    graph[module].add(dep)
    return graph


def test_module_import_graph_is_acyclic():
    graph, state, stack = _graph(), {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _loaded_after(imports: list[str], prefixes: list[str]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in imports)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": "", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return out.stdout.strip()


def test_only_the_allowed_modules_import_flax_or_equinox():
    found = {framework: set() for framework in FRAMEWORK_IMPORTS}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] in found:
                    found[name.split(".")[0]].add(module)
    assert found == FRAMEWORK_IMPORTS


def test_nothing_in_jaxwm_imports_the_equinox_adapter():
    importers = [
        module
        for module, path in MODULES.items()
        for target, _, _, _ in _imports(module, path)
        if target == "jaxwm.adapters.equinox" and module != target
    ]
    assert not importers, importers


def test_algorithm_modules_do_not_import_flax():
    assert _loaded_after(ALGORITHMS, ["flax"]) == "[]"


def test_import_jaxwm_loads_neither_the_runner_nor_flax_nor_equinox_nor_matplotlib():
    loaded = _loaded_after(["jaxwm"], ["flax", "equinox", "ml_collections", "matplotlib"])
    assert loaded == "[]", loaded
    code = (
        "import jaxwm; print(jaxwm.__version__, jaxwm.JaxwmError.__name__, "
        "all(getattr(jaxwm, n) is not None for n in jaxwm.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": "", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.stdout.split() == ["0.2.0", "JaxwmError", "True"]


def test_version_and_revision_are_recorded():
    from jaxwm import version
    from jaxwm.runner import experiments

    env = experiments.environment()
    assert env["jaxwm"] == version.__version__ == "0.2.0"
    rev = env["git_revision"]
    if (ROOT / ".git").exists():
        assert rev is not None and len(rev.split("+")[0]) == 40
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{version.__version__}"' in pyproject  # one version, two places
