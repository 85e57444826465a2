"""The house in layers (README, "How the code is laid out"): every module of `vitlens/` belongs to one
layer, imports only from its own layer or below, and the imports form no circle. The graph is read
from the source, deferred imports (inside functions) included; the exceptions are named below with
their reason."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vitlens"

# From the ground up. A name is a top-level module or folder of vitlens/.
LAYERS = {
    "core": ["version", "errors", "options", "request", "result", "declarations", "links", "frames", "progress",
             "device", "distributed"],
    "compute": ["models", "data", "features", "metrics", "training", "hessian", "landscape"],
    "store": ["store"],
    "analyses": ["context", "analyses", "claims"],
    "views": ["plots", "figures", "experiment_plots"],
    "run": ["engine", "budget", "train"],
    "jobs and exports": ["jobs", "experiments", "worker", "report", "wandb_export", "readme"],
    "faces": ["api", "cli", "ui", "__init__", "__main__"],
}
# Imports that break the rule or close a circle, each with its reason. Keep this list short.
EXCEPTIONS = {
    ("declarations", "analyses"): "the registry imports the analyses' modules when a name is first looked up "
                                  "(each registers itself on import)",
}

LAYER_OF = {name: k for k, names in enumerate(LAYERS.values()) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def exists(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The vitlens modules PATH imports (at module level or deferred), by module name."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
            elif (node.module or "").split(".")[0] == "vitlens":
                base = []
            else:
                continue
            module = (node.module or "").removeprefix("vitlens").lstrip(".") if not node.level else node.module
            target = base + (module.split(".") if module else [])
            for alias in node.names:  # `from . import plots` imports the module plots
                sub = ".".join(target + [alias.name])
                found.add(sub if exists(sub) else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vitlens":
                    found.add(alias.name.removeprefix("vitlens").lstrip(".") or "__init__")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    return LAYER_OF[module.split(".")[0]]


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[0] for m in graph()} - set(LAYER_OF))
    assert not missing, f"modules without a layer in LAYERS: {missing}"


def test_no_module_imports_a_higher_layer():
    up = [f"{module} -> {target}" for module, targets in graph().items() for target in targets
          if layer(target) > layer(module) and (module.split(".")[0], target.split(".")[0]) not in EXCEPTIONS]
    assert not up, "imports that run up a layer:\n" + "\n".join(sorted(up))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_no_circles():
    edges = {m: {t for t in ts if (m.split(".")[0], t.split(".")[0]) not in EXCEPTIONS}
             for m, ts in graph().items()}
    assert not circles(edges), circles(edges)


def test_every_exception_is_still_needed():
    used = {(m.split(".")[0], t.split(".")[0]) for m, ts in graph().items() for t in ts}
    assert set(EXCEPTIONS) <= used, set(EXCEPTIONS) - used


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_name():
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vitlens")):
                private += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private, private


def test_no_module_is_long():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_readme_names_every_layer():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    for name, modules in LAYERS.items():
        assert f"**{name}**" in section, name
        for module in modules:
            if module not in ("__init__", "__main__"):
                assert f"`{module}" in section, module
