"""dreamcore: DeepDream on PyTorch, usable from Python and from the `dreamcore` command.

from dreamcore import dream, DreamSettings
result = dream("photo.jpg", DreamSettings.from_preset("deep", seed=1))
result.image.save("dream.png")
"""

from dreamcore.api import DreamResult, dream, preview_image
from dreamcore.atlas import layer_atlas
from dreamcore.errors import Cancelled, DreamError, ImageError, UsageError, WeightsError
from dreamcore.networks import layer_catalog, list_networks, load_network
from dreamcore.objectives import Objective
from dreamcore.render import Step
from dreamcore.settings import PRESETS, DreamSettings

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Cancelled",
    "DreamError",
    "DreamResult",
    "DreamSettings",
    "ImageError",
    "Objective",
    "Step",
    "UsageError",
    "WeightsError",
    "dream",
    "layer_atlas",
    "layer_catalog",
    "list_networks",
    "load_network",
    "preview_image",
]
