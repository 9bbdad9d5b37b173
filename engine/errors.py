"""The engine's exception types: user mistakes, model problems, cancellation."""


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class InputError(EngineError, ValueError):
    """Bad input the user can fix (a parameter, a file, a prompt). The message says how."""


class ModelError(InputError):
    """A model that cannot be found or loaded; the message names the file or component."""


class Cancelled(EngineError):
    """Raised from inside a run when ``should_stop()`` returned True."""
