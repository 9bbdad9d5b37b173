"""Models this version cannot edit with are named before anything loads: Qwen-Image's
text-to-image model."""

from __future__ import annotations

import json

import pytest

from engine import families
from engine.errors import ModelError


@pytest.mark.parametrize("pipeline", ["QwenImagePipeline"])
def test_models_we_do_not_run_are_refused_by_name(tmp_path, pipeline):
    """A folder of many gigabytes is refused from its model_index.json alone; the README's model
    table says which are not supported yet."""
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(ModelError, match=f"this is a {pipeline} model, which DiffEdit Studio "
                                         "cannot edit with"):
        families.folder_family(tmp_path)
