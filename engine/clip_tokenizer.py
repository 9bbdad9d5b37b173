"""A real CLIP tokenizer built offline from the BPE vocabulary in resources/clip.

SD 1.x/2.x use CLIP's byte-level BPE with 49408 tokens. The merges file from the PyPI package
`open-clip-torch` (MIT, notice in resources/clip/LICENSE) defines that vocabulary completely, so
a `CLIPTokenizer` can be built without any download: for single-file checkpoints and for the
tiny test model. It is vendored because open-clip-torch's own dependencies would replace the
installed torch and add torchvision.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from engine.errors import ModelError
from engine.resources import resource_path

VOCAB_SIZE = 49408
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"


def bpe_file() -> Path:
    """Where the BPE merges file lies (resources/clip)."""
    path = resource_path("clip", BPE_NAME)
    if not path.is_file():
        raise ModelError(f"the CLIP vocabulary file {path} is missing: the installation is "
                         "incomplete; reinstall DiffEdit Studio")
    return path


def _byte_alphabet() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values, in vocabulary order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_file(), "rt", encoding="utf-8").read().split("\n")
    # The first line is a header; the vocabulary uses the first 49152 - 256 - 2 merges.
    merges = lines[1 : VOCAB_SIZE - 256 * 2 - 2 + 1]
    alphabet = _byte_alphabet()
    tokens = alphabet + [ch + "</w>" for ch in alphabet]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write vocab.json, merges.txt and the tokenizer config into ``folder`` (diffusers layout).

    SD 1.x pads with <|endoftext|>; SD 2.x (OpenCLIP) pads with "!".
    """
    vocab, merges = _vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}),
        encoding="utf-8",
    )
    return folder


def build_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    """A transformers CLIPTokenizer loaded from freshly written files in ``folder``."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder, pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
