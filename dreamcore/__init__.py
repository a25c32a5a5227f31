"""dreamcore: DeepDream on PyTorch, usable from Python and from the `dreamcore` command.

from dreamcore import dream, DreamSettings
result = dream("photo.jpg", DreamSettings.from_preset("deep", seed=1))
result.image.save("dream.png")
"""

from dreamcore.api import DreamResult, dream, preview_image
from dreamcore.atlas import layer_atlas
from dreamcore.drawing import DrawSettings, PictureResult, draw_path, fill_mask, letters, mix, visualize
from dreamcore.errors import Cancelled, DreamError, ImageError, UsageError, WeightsError
from dreamcore.networks import layer_catalog, list_networks, load_network
from dreamcore.objectives import Objective
from dreamcore.render import Step
from dreamcore.settings import PRESETS, DreamSettings
from dreamcore.zoom import ZoomResult, ZoomSettings  # zoom() itself: dreamcore.zoom.zoom (same name as the module)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Cancelled",
    "DrawSettings",
    "DreamError",
    "DreamResult",
    "DreamSettings",
    "ImageError",
    "Objective",
    "PictureResult",
    "Step",
    "UsageError",
    "WeightsError",
    "ZoomResult",
    "ZoomSettings",
    "draw_path",
    "dream",
    "fill_mask",
    "layer_atlas",
    "layer_catalog",
    "letters",
    "list_networks",
    "load_network",
    "mix",
    "preview_image",
    "visualize",
]
