"""DiffEdit Studio's desktop app (PySide6): canvas, mask brush, panels, history, engine thread."""
