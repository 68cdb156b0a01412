"""The shape of the house: imports flow one way (plots, core <- analysis <- sweeps <- scripts), with no cycle,
no re-export facade and no lazy import of the project's own modules; the mutation-testing configuration
names modules that exist; the top level stays short."""
import ast
import configparser

import pytest

from conftest import ROOT

FOLDERS = ("core", "analysis", "sweeps")
# Layer of each module: a module may import only modules of its own layer or a lower one.
LAYER = {"plots": 0, "dataset": 1, "model": 1, "config": 1, "core": 1, "analysis": 2, "sweeps": 3}
SCRIPT = 4  # every other top-level module: what a user runs
TOP_LEVEL_LIMIT = 16


def project_modules() -> dict[str, object]:
    """{dotted name: path} of every project module (top-level files and the layer folders)."""
    mods = {path.stem: path for path in ROOT.glob("*.py")}
    for folder in FOLDERS:
        mods |= {f"{folder}.{path.stem}": path for path in (ROOT / folder).glob("*.py") if path.stem != "__init__"}
    return mods


def layer(module: str) -> int:
    return LAYER.get(module.split(".")[0], SCRIPT)


def imports_of(path, modules) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level?) for each import of a project module in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in top) for n in names if n in modules or n in FOLDERS]
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_imports_flow_down_the_layers():
    wrong = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)}) on line {line}"
             for name, edges in graph().items() for target, line, _ in edges if layer(target) > layer(name)]
    assert not wrong, "\n".join(wrong)


def test_the_layering_rule_catches_an_upward_import():
    """The check above can fail: a library module importing a script is flagged."""
    assert layer("analysis.summary") < layer("interpretability") and layer("core.training") < layer("sweeps.runner")
    assert layer("plots") < layer("core.checkpoint") == layer("config") == layer("model")


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in edges:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    edges = {name: [t for t, _, _ in e] for name, e in graph().items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None


def test_project_imports_are_at_module_level():
    """A project module imported inside a function usually hides a cycle (test_setup.py's checks import what
    they test on purpose, to report a broken install as one line)."""
    lazy = [f"{name} line {line}: {target}" for name, edges in graph().items() if name != "test_setup"
            for target, line, at_top in edges if not at_top]
    assert not lazy, "\n".join(lazy)


def test_no_re_export_facades():
    hits = [f"{name}: line {i + 1}" for name, path in project_modules().items()
            for i, line in enumerate(path.read_text().splitlines()) if "noqa: F401" in line]
    assert not hits, hits


def test_the_top_level_stays_short():
    scripts = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(scripts) <= TOP_LEVEL_LIMIT, scripts
    for name in ("dataset.py", "model.py", "config.py", "train.py", "interpretability.py", "example_quick_start.py",
                 "test_setup.py", "plots.py"):
        assert name in scripts


def mutation_config() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["mutmut"]


@pytest.mark.parametrize("key", ["source_paths", "also_copy", "pytest_add_cli_args_test_selection"])
def test_every_path_the_mutation_configuration_names_exists(key):
    paths = mutation_config()[key].split()
    assert paths and all((ROOT / p).exists() for p in paths), [p for p in paths if not (ROOT / p).exists()]


def test_mutation_testing_covers_every_analysis_module():
    mutated = set(mutation_config()["source_paths"].split())
    wanted = {f"analysis/{p.name}" for p in (ROOT / "analysis").glob("*.py") if p.name != "__init__.py"}
    wanted |= {"model.py", "core/transformer.py", "sweeps/regimes.py"}
    assert wanted <= mutated, sorted(wanted - mutated)


def test_the_readme_notebook_example_imports_what_exists():
    """The README's notebook example names the functions under their module names (its imports run)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    imports = [line for line in block.splitlines() if line.startswith(("from ", "import "))]
    assert len(imports) >= 4
    exec("\n".join(imports), {})
