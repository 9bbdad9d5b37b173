"""Crash-safe autosave of the editing session (storage, saver, restore dialog), and its offer at start."""

from desktop_app.autosave.restore_dialog import install, offer_restore, restore_panel
from desktop_app.autosave.saver import Autosaver, panel_state
from desktop_app.autosave.schema import AutosaveError
from desktop_app.autosave.storage import SavedSession, autosave_root, find_orphans

__all__ = ["Autosaver", "AutosaveError", "SavedSession", "autosave_root", "find_orphans", "install",
           "offer_restore", "panel_state", "restore_panel"]
