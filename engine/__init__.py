"""DiffEdit Studio's engine: Qt-free text-guided photo editing on diffusers components.

Importing this package is cheap (no torch); the heavy modules load when first used.
"""

from engine.errors import Cancelled, EngineError, InputError, ModelError
from engine.params import EditParams

__all__ = ["Cancelled", "EngineError", "InputError", "ModelError", "EditParams"]
