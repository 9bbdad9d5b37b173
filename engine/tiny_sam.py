"""A tiny random-weight SAM saved in transformers' layout, for tests of the segment plumbing."""

from __future__ import annotations

from pathlib import Path

SIZE = 64  # the tiny model's input side (real SAM: 1024)


def save_tiny_sam(folder: Path, seed: int = 0) -> Path:
    """Build a SamModel from a small SamConfig (random weights) and save it with its processor."""
    import torch

    from engine.libraries import quiet_libraries

    quiet_libraries()  # before the import: transformers warns there that torchvision is missing
    from transformers import (SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel,
                              SamProcessor, SamPromptEncoderConfig, SamVisionConfig)

    width, patch = 32, 8
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=SIZE, patch_size=patch,
                                      window_size=4, global_attn_indexes=(1,),
                                      num_pos_feats=width // 2, mlp_dim=2 * width),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=width, image_size=SIZE,
                                                     patch_size=patch, mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=width, mlp_dim=2 * width,
                                                 num_attention_heads=2, iou_head_hidden_dim=width),
    )
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    processor = SamProcessor(SamImageProcessor(
        size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE},
        mask_size={"longest_edge": SIZE // 4}, mask_pad_size={"height": SIZE // 4, "width": SIZE // 4}))
    processor.save_pretrained(folder)
    return folder


def cache_tiny_sam(cache: Path, repo_id: str = "facebook/sam-vit-base") -> Path:
    """The tiny SAM placed in a Hugging Face hub cache as ``repo_id``, laid out as `hf download`
    leaves it (refs/main naming a snapshot folder), so it loads through the real model's lookup."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        save_tiny_sam(snapshot.with_suffix(".partial"))
        shutil.move(snapshot.with_suffix(".partial"), snapshot)
    return snapshot
