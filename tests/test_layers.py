"""The package's modules: layers that point one way, one concern per module of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import normalcrafter_pipeline

PACKAGE_DIR = Path(normalcrafter_pipeline.__file__).parent

# Bottom to top; a module may import modules of its own layer or of a layer below, never above (imports inside
# functions count too). Keyed by the first component of the module's name inside the package.
LAYERS = [
    # file formats, pure maths, names without torch
    {"formats", "normalcrafter_normals_processor", "metrics", "dtypes", "normalcrafter_checks", "paced_frames"},
    # the Hub code: the pipeline and its parts
    {"normalcrafter_unet", "normalcrafter_video_processor", "normalcrafter_windows", "pipeline_normalcrafter"},
    # the package's pipeline (loading, saving, publishing) and video input and output
    {"hub_loading", "hub_publishing", "pretrained", "video_io", "normals_writers"},
    # what every front end shares
    {"model_setup", "video_runner", "testing_utils"},
    # the front ends and training
    {"cli", "demo", "evaluation", "evaluation_models", "evaluation_report", "publish", "training"},
]
MAX_LINES = 700


def package_modules() -> dict[str, Path]:
    """{dotted name inside the package: file} for every module but `__init__.py` files."""
    return {
        ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts): path
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if path.name != "__init__.py"
    }


def imported_package_modules(name: str, path: Path) -> set[str]:
    """The package's modules that module `name` imports, as dotted names inside the package."""
    package_parts = name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(["normalcrafter_pipeline", *package_parts[: len(package_parts) - node.level + 1]])
            module = f"{base}.{node.module}" if node.module else base
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    prefix = "normalcrafter_pipeline."
    return {module[len(prefix) :] for module in found if module.startswith(prefix)}


def layer_of(name: str) -> int | None:
    top = name.split(".")[0]
    return next((index for index, layer in enumerate(LAYERS) if top in layer), None)


def test_every_module_has_a_layer():
    assert [name for name in package_modules() if layer_of(name) is None] == []


def test_no_module_imports_one_from_a_layer_above():
    upward = []
    for name, path in package_modules().items():
        for imported in imported_package_modules(name, path):
            if layer_of(imported) is not None and layer_of(imported) > layer_of(name):
                upward.append(f"{name} -> {imported}")
    assert upward == []


def test_every_module_is_of_a_readable_size():
    sizes = {name: len(path.read_text().splitlines()) for name, path in package_modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}
