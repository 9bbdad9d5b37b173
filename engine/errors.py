"""The engine's exception types: user mistakes, model problems, cancellation."""


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class InputError(EngineError, ValueError):
    """Bad input the user can fix (a parameter, a file, a prompt). The message says how.

    ``field`` names the input at fault (an EditParams field, a method option, "mask", "source"),
    so that each surface can point at it in its own terms (the CLI names the flag).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ModelError(InputError):
    """A model that cannot be found or loaded; the message names the file or component."""


class Cancelled(EngineError):
    """Raised from inside a run when ``should_stop()`` returned True."""
