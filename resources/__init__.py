"""DiffEdit Studio's data files; a wheel installs this folder as the package engine.assets."""
