"""Click-to-segment with SAM (transformers' SamModel): find the model in the local hub cache, and
turn a click on the photo into a mask of the object under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import InputError

# The models tried, smallest first; each loads with transformers' SamModel and SamProcessor.
SAM_MODELS = ("facebook/sam-vit-base", "facebook/sam-vit-large", "facebook/sam-vit-huge")
MISSING = ("The Segment tool needs a SAM model, and none is in the Hugging Face cache ({cache}). "
           "Download {model} (375 MB) once with `hf download {model}` (or "
           "`huggingface-cli download {model}`), then click again.")
EMBEDDINGS_KEPT = 2  # photos whose image embeddings stay cached (the expensive half of SAM)


def find_sam(candidates=SAM_MODELS) -> Path:
    """The folder of the first SAM model of ``candidates`` in the local hub cache (no download),
    or InputError saying which model to download and how."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from engine.catalog import hub_cache_dir
    from engine.models import _check_cache_entry

    cache = hub_cache_dir()
    for repo_id in candidates:
        _check_cache_entry(cache / ("models--" + repo_id.replace("/", "--")), repo_id)
        try:
            return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache))
        except LocalEntryNotFoundError:
            continue
    raise InputError(MISSING.format(cache=cache, model=candidates[0]))


class Segmenter:
    """A loaded SAM model: segment(photo_key, rgb, x, y) -> (H, W) float32 mask of 0 and 1."""

    def __init__(self, folder: Path, device: str = "auto"):
        from transformers import SamModel, SamProcessor

        from engine.libraries import quiet_libraries
        from engine.models import resolve_device

        quiet_libraries()
        self.name = Path(folder).name
        self.device = resolve_device(device)
        self.processor = SamProcessor.from_pretrained(folder, local_files_only=True)
        self.model = SamModel.from_pretrained(folder, local_files_only=True).float()
        self.model.to(self.device).eval()
        self._embeddings: dict[str, tuple] = {}  # photo key -> (embeddings, original, resized)

    def _embed(self, photo_key: str, rgb: np.ndarray):
        """The photo's image embeddings (its sizes with them), computed once per photo key."""
        import torch

        if photo_key not in self._embeddings:
            inputs = self.processor(images=np.ascontiguousarray(rgb), return_tensors="pt")
            with torch.inference_mode():
                embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            while len(self._embeddings) >= EMBEDDINGS_KEPT:
                self._embeddings.pop(next(iter(self._embeddings)))
            self._embeddings[photo_key] = (embeddings, inputs["original_sizes"],
                                           inputs["reshaped_input_sizes"])
        return self._embeddings[photo_key]

    def segment(self, photo_key: str, rgb: np.ndarray, x: float, y: float) -> np.ndarray:
        """The mask SAM scores best for a foreground click at photo pixel (x, y)."""
        import torch

        height, width = rgb.shape[:2]
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(f"the click at ({x:.0f}, {y:.0f}) is outside the {width}x{height} photo")
        embeddings, original, resized = self._embed(photo_key, rgb)
        # SAM takes points in the resized image's pixels (longest side = the model's input size).
        scale_y, scale_x = (resized[0] / original[0]).tolist()
        point = torch.tensor([[[[x * scale_x, y * scale_y]]]], dtype=torch.float32)
        with torch.inference_mode():
            out = self.model(image_embeddings=embeddings, input_points=point.to(self.device),
                             input_labels=torch.ones((1, 1, 1), dtype=torch.long,
                                                     device=self.device),
                             multimask_output=True)
        best = int(out.iou_scores[0, 0].argmax())
        low_res = out.pred_masks[:, :, best:best + 1].float().cpu()  # (1, 1, 1, h, w) logits
        mask = self.processor.image_processor.post_process_masks(low_res, original, resized)[0]
        return mask[0, 0].numpy().astype(np.float32)


def load_segmenter(folder: Path | None = None, device: str = "auto") -> Segmenter:
    """A Segmenter from ``folder``, or from the first SAM model in the hub cache."""
    return Segmenter(folder if folder is not None else find_sam(), device)
