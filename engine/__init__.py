"""DiffEdit Studio's engine: Qt-free text-guided photo editing on diffusers components.

Importing this package is cheap (no torch); the heavy modules load when first used.
"""

__version__ = "0.1.0"  # the one place the release number is written (pyproject reads it)

from engine.errors import Cancelled, EngineError, InputError, ModelError
from engine.params import EditParams

__all__ = ["__version__", "Cancelled", "EngineError", "InputError", "ModelError", "EditParams"]
