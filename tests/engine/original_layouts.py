"""A flow transformer's diffusers state dict in its family's original (released, ComfyUI) key
layout: the inverse of diffusers' single-file conversion, written for the tiny models' configs,
so that tests can make the single files real models ship (GGUF, bf16 and fp8 safetensors)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    fused: tuple[tuple[str, str, str, str], ...]  # diffusers' q, k, v parts -> one fused name
    renames: tuple[tuple[str, str], ...]  # regex -> replacement, applied in order to every key
    swapped: tuple[str, ...] = ()  # original keys (regex) stored (shift, scale), diffusers' (scale, shift)


_ZIMAGE = Layout(
    fused=((".attention.to_q.", ".attention.to_k.", ".attention.to_v.", ".attention.qkv."),),
    renames=((r"^all_final_layer\.2-1\.", "final_layer."), (r"^all_x_embedder\.2-1\.", "x_embedder."),
             (r"\.attention\.to_out\.0\.", ".attention.out."),
             (r"\.attention\.norm_k\.", ".attention.k_norm."),
             (r"\.attention\.norm_q\.", ".attention.q_norm.")))

_DOUBLE = r"^transformer_blocks\.(\d+)\."
_SINGLE = r"^single_transformer_blocks\.(\d+)\."
_FLUX2 = Layout(
    fused=((".attn.to_q.", ".attn.to_k.", ".attn.to_v.", ".attn.qkv."),
           (".attn.add_q_proj.", ".attn.add_k_proj.", ".attn.add_v_proj.", ".attn.add_qkv.")),
    renames=(
        (r"^x_embedder\.", "img_in."), (r"^context_embedder\.", "txt_in."),
        (r"^time_guidance_embed\.timestep_embedder\.linear_1\.", "time_in.in_layer."),
        (r"^time_guidance_embed\.timestep_embedder\.linear_2\.", "time_in.out_layer."),
        (r"_modulation(_img|_txt)?\.linear\.", r"_modulation\1.lin."),
        (r"^proj_out\.", "final_layer.linear."),
        (r"^norm_out\.linear\.", "final_layer.adaLN_modulation.1."),
        (_DOUBLE + r"attn\.qkv\.", r"double_blocks.\1.img_attn.qkv."),
        (_DOUBLE + r"attn\.add_qkv\.", r"double_blocks.\1.txt_attn.qkv."),
        (_DOUBLE + r"attn\.norm_q\.weight", r"double_blocks.\1.img_attn.norm.query_norm.scale"),
        (_DOUBLE + r"attn\.norm_k\.weight", r"double_blocks.\1.img_attn.norm.key_norm.scale"),
        (_DOUBLE + r"attn\.norm_added_q\.weight", r"double_blocks.\1.txt_attn.norm.query_norm.scale"),
        (_DOUBLE + r"attn\.norm_added_k\.weight", r"double_blocks.\1.txt_attn.norm.key_norm.scale"),
        (_DOUBLE + r"attn\.to_out\.0\.", r"double_blocks.\1.img_attn.proj."),
        (_DOUBLE + r"attn\.to_add_out\.", r"double_blocks.\1.txt_attn.proj."),
        (_DOUBLE + r"ff\.linear_in\.", r"double_blocks.\1.img_mlp.0."),
        (_DOUBLE + r"ff\.linear_out\.", r"double_blocks.\1.img_mlp.2."),
        (_DOUBLE + r"ff_context\.linear_in\.", r"double_blocks.\1.txt_mlp.0."),
        (_DOUBLE + r"ff_context\.linear_out\.", r"double_blocks.\1.txt_mlp.2."),
        (_SINGLE + r"attn\.to_qkv_mlp_proj\.", r"single_blocks.\1.linear1."),
        (_SINGLE + r"attn\.to_out\.", r"single_blocks.\1.linear2."),
        (_SINGLE + r"attn\.norm_q\.weight", r"single_blocks.\1.norm.query_norm.scale"),
        (_SINGLE + r"attn\.norm_k\.weight", r"single_blocks.\1.norm.key_norm.scale")),
    swapped=(r"^final_layer\.adaLN_modulation\.1\.weight$",))

_X, _C = r"joint_blocks.\1.x_block.", r"joint_blocks.\1.context_block."
_SD3 = Layout(
    fused=((".attn.to_q.", ".attn.to_k.", ".attn.to_v.", ".attn.qkv."),
           (".attn.add_q_proj.", ".attn.add_k_proj.", ".attn.add_v_proj.", ".attn.add_qkv."),
           (".attn2.to_q.", ".attn2.to_k.", ".attn2.to_v.", ".attn2.qkv.")),
    renames=(
        (r"^pos_embed\.pos_embed$", "pos_embed"), (r"^pos_embed\.proj\.", "x_embedder.proj."),
        (r"^time_text_embed\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
        (r"^time_text_embed\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
        (r"^time_text_embed\.text_embedder\.linear_1\.", "y_embedder.mlp.0."),
        (r"^time_text_embed\.text_embedder\.linear_2\.", "y_embedder.mlp.2."),
        (r"^proj_out\.", "final_layer.linear."),
        (r"^norm_out\.linear\.", "final_layer.adaLN_modulation.1."),
        (_DOUBLE + r"attn\.qkv\.", _X + "attn.qkv."),
        (_DOUBLE + r"attn\.add_qkv\.", _C + "attn.qkv."),
        (_DOUBLE + r"attn2\.qkv\.", _X + "attn2.qkv."),
        (_DOUBLE + r"attn\.norm_q\.", _X + "attn.ln_q."),
        (_DOUBLE + r"attn\.norm_k\.", _X + "attn.ln_k."),
        (_DOUBLE + r"attn\.norm_added_q\.", _C + "attn.ln_q."),
        (_DOUBLE + r"attn\.norm_added_k\.", _C + "attn.ln_k."),
        (_DOUBLE + r"attn2\.norm_q\.", _X + "attn2.ln_q."),
        (_DOUBLE + r"attn2\.norm_k\.", _X + "attn2.ln_k."),
        (_DOUBLE + r"attn\.to_out\.0\.", _X + "attn.proj."),
        (_DOUBLE + r"attn\.to_add_out\.", _C + "attn.proj."),
        (_DOUBLE + r"attn2\.to_out\.0\.", _X + "attn2.proj."),
        (_DOUBLE + r"norm1\.linear\.", _X + "adaLN_modulation.1."),
        (_DOUBLE + r"norm1_context\.linear\.", _C + "adaLN_modulation.1."),
        (_DOUBLE + r"ff\.net\.0\.proj\.", _X + "mlp.fc1."),
        (_DOUBLE + r"ff\.net\.2\.", _X + "mlp.fc2."),
        (_DOUBLE + r"ff_context\.net\.0\.proj\.", _C + "mlp.fc1."),
        (_DOUBLE + r"ff_context\.net\.2\.", _C + "mlp.fc2.")),
    # the last joint block only reads the text (context_pre_only): its modulation is final-layer-like
    swapped=(r"^final_layer\.adaLN_modulation\.1\.", r"^joint_blocks\.{last}\.context_block\.adaLN_modulation\.1\."))

LAYOUTS = {"zimage": _ZIMAGE, "flux2-klein": _FLUX2, "sd3": _SD3}
# the architecture name city96's GGUF files carry for each family
GGUF_ARCH = {"zimage": "lumina2", "flux2-klein": "flux", "sd3": "sd3"}


def original_layout(family: str, state: dict) -> dict:
    """``state`` (a diffusers transformer's) as ``family``'s released checkpoint names it."""
    layout = LAYOUTS[family]
    state = dict(state)
    for q, k, v, fused in layout.fused:
        for key in [key for key in state if q in key]:
            state[key.replace(q, fused)] = torch.cat([state.pop(key.replace(q, p)) for p in (q, k, v)])
    blocks = [int(m.group(1)) for key in state if (m := re.match(r"transformer_blocks\.(\d+)\.", key))]
    swapped = [pattern.format(last=max(blocks, default=0)) for pattern in layout.swapped]
    out = {}
    for key, value in state.items():
        for pattern, replacement in layout.renames:
            key = re.sub(pattern, replacement, key)
        if any(re.match(pattern, key) for pattern in swapped):
            first, second = value.chunk(2)  # diffusers' (scale, shift) back to (shift, scale)
            value = torch.cat([second, first])
        out[key] = value
    return out
