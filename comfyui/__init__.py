"""NormalCrafter nodes for ComfyUI (V3 node API: `comfy_api.latest`, `comfy_entrypoint`).

Install: link or copy this folder into `ComfyUI/custom_nodes/`, and install the `normalcrafter-pipeline` package
(with its `exr` extra) into ComfyUI's Python environment. See README.md beside this file.
"""

try:
    from .nodes import NormalCrafterExtension
except ModuleNotFoundError as error:
    if error.name != "normalcrafter_pipeline":
        raise
    raise ModuleNotFoundError(
        "The NormalCrafter nodes need the `normalcrafter-pipeline` package in ComfyUI's Python environment: "
        'run `python -m pip install "normalcrafter-pipeline[exr]"` (or `pip install -e "<checkout>[exr]"`) with '
        "ComfyUI's python, then restart ComfyUI.",
        name=error.name,
    ) from error


async def comfy_entrypoint() -> NormalCrafterExtension:
    return NormalCrafterExtension()
