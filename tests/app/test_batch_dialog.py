"""File > Batch...: the app gives the `batch` command for its current settings, to copy."""

import shlex

import pytest
from PySide6.QtGui import QGuiApplication

from desktop_app.dialogs import BatchDialog
from engine import cli


@pytest.mark.slow
def test_batch_gives_the_command_for_the_current_settings(window, monkeypatch):
    shown = []
    monkeypatch.setattr(BatchDialog, "exec", lambda dialog: shown.append(dialog))
    window.params.target.setText("a dog in the snow")
    file_menu = window.menuBar().actions()[0].menu()
    assert window.actions["batch"] in file_menu.actions()
    window.actions["batch"].trigger()
    [dialog] = shown
    words = shlex.split(dialog.command.toPlainText())
    args = cli.build_parser().parse_args(words[1:])
    assert (args.command, args.source, args.target) == ("batch", "a cat", "a dog in the snow")
    assert cli._params(args) == window.params.params()
    dialog.copy()
    assert QGuiApplication.clipboard().text() == dialog.command.toPlainText()
