"""What every end-to-end edit through the window must show: only the mask's area changed, apply
puts the result in the document and undo takes it back (shared by the real-model app tests)."""

import numpy as np

from engine import masks


def check_only_the_mask_changed_then_apply_and_undo(win, entry, original: np.ndarray) -> np.ndarray:
    """Assert it on ``entry`` (a history entry of ``win``'s document, made from ``original``);
    returns the pixels the paste-back kept (True: the photo's own)."""
    outside = masks.paste_alpha(entry.mask, entry.params.feather) == 0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(entry.image[outside], original[outside])
    assert np.any(entry.image[~outside] != original[~outside]), "the edit changed nothing"
    win.history.apply_button.click()
    np.testing.assert_array_equal(win.doc.base, entry.image)
    win.actions["undo"].trigger()
    np.testing.assert_array_equal(win.doc.base, original)
    return outside
