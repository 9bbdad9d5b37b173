"""The CLI's manners: mistakes refused before the model loads, in the CLI's own words (flags);
status lines while loading, a last line naming every file written; -o OUT always written;
--threads; --version; exit codes 2, 1 and 130."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import __version__, cli, models
from engine.config import physical_cores
from engine.errors import InputError
from engine.runtime import set_threads


@pytest.fixture
def photo(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "black.png")
    return tmp_path


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was refused")
    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize("args, message", [
    (["--method", "blended"], "Blended Latent Diffusion (inpaint) needs a mask: "),
    (["--method", "blended", "--action", "extend"],
     "extend adds no canvas: set --extend-left, --extend-right, --extend-top or --extend-bottom"),
    (["--method", "p2p"], "give the source text (what is in the photo now) (--source TEXT)"),
    (["--method", "sdedit", "--masked"], "masked SDEdit needs a mask"),
    (["--mask", "{d}/black.png"], "the mask is empty, so nothing would change"),
    (["--steps", "0"], "--steps must be from 1 to "),
    (["--threads", "-1"], "--threads must be a whole number from 0 (the physical cores) to 1024"),
    (["--method", "pnp", "--candidates", "2"], "--candidates do not apply to --method pnp"),
])
def test_mistakes_are_refused_before_the_model_loads_with_flag_names(photo, capsys, no_model_load,
                                                                    threads_restored, args, message):
    code = cli.main(["edit", str(photo / "photo.png"), "-o", str(photo / "out.png"), "--target",
                     "a bird", "--model", "tiny", *(a.format(d=photo) for a in args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    if "mask" in message and "--mask" not in args:
        assert err.rstrip().endswith("(--mask MASK.png)")


def test_help_has_no_empty_default():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["edit"].format_help()
    assert "(default )" not in help_text and "--threads" in help_text
    assert "--clip-model" in help_text


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"diffedit-studio {__version__}"


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("error: give a command: edit, mask, batch, models")


@pytest.mark.parametrize("raised, code, line", [
    (KeyboardInterrupt(), 130, "error: interrupted"),
    (InputError("bad thing", field="seed"), 2, "error: bad thing (--seed)"),
    (RuntimeError("boom"), 1, "internal error: RuntimeError: boom"),
])
def test_exit_codes(photo, capsys, monkeypatch, threads_restored, raised, code, line):
    def fail(*args, **kwargs):
        raise raised
    monkeypatch.setattr(models, "load_model", fail)
    assert cli.main(["edit", str(photo / "photo.png"), "-o", str(photo / "out.png"), "--target",
                     "a bird", "--model", "tiny", "--mask", str(photo / "mask.png")]) == code
    assert capsys.readouterr().err.splitlines()[-1].startswith(line)


@pytest.mark.slow
def test_status_lines_and_every_written_file_named(photo, capsys, threads_restored):
    out = photo / "bird.png"
    code = cli.main(["edit", str(photo / "photo.png"), "-o", str(out), "--target", "a bird",
                     "--model", "tiny", "--steps", "2", "--method", "blended", "--mask",
                     str(photo / "mask.png"), "--candidates", "2", "--save-mask",
                     str(photo / "used.png"), "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "loading model tiny (device auto, 1 CPU thread)..." in captured.err
    assert "model ready: tiny (random weights) on cpu, float32" in captured.err
    names = [photo / n for n in ("bird.png", "bird-1.png", "bird-2.png", "used.png")]
    assert captured.out.splitlines()[-1] == "wrote " + ", ".join(map(str, names))
    # -o OUT is the best candidate (the first: no ranking model), the others beside it.
    assert out.read_bytes() == (photo / "bird-1.png").read_bytes()
    assert out.read_bytes() != (photo / "bird-2.png").read_bytes()
    assert torch.get_num_threads() == 1


@pytest.mark.slow
def test_quiet_prints_nothing_on_success(photo, capsys, threads_restored):
    code = cli.main(["mask", str(photo / "photo.png"), "-o", str(photo / "m.png"), "--target",
                     "a bird", "--model", "tiny", "--mask-samples", "1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == "" and captured.err == ""
    assert (photo / "m.png").is_file()


def test_threads_default_to_the_physical_cores(threads_restored):
    assert set_threads(0) == physical_cores() == torch.get_num_threads()
    assert set_threads(1) == 1 == torch.get_num_threads()
    with pytest.raises(InputError, match="threads must be a whole number"):
        set_threads(True)
