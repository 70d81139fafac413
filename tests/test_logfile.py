"""log.txt (runner/logfile.py), console verbosity, plain progress lines and TensorBoard events."""

import logging
import sys

import pytest

from jaxwm.errors import ConfigError
from jaxwm.runner import logfile, tensorboard

SECRET = "s3cr3t-key-that-must-never-reach-a-file"


class _Stderr(logging.Handler):
    """Like absl's handler: writes to whatever ``sys.stderr`` is at the time (here: the tee)."""

    def emit(self, record):
        sys.stderr.write(self.format(record) + "\n")


def test_log_txt_holds_info_and_printed_lines_but_the_console_keeps_its_level(tmp_path, capsys):
    root = logging.getLogger()
    handler = _Stderr()  # a console at the default threshold, WARNING
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        with logfile.run_log(tmp_path, redact=(SECRET,)):
            logging.getLogger("jaxwm.engine.partition").info("parameter selection table")
            logging.getLogger("orbax").info("a library's chatter")
            logging.getLogger("jaxwm.runner").warning("a warning")
            sys.stderr.write("\rtrain 1/4\rtrain 2/4\rtrain 4/4\n")  # a progress bar's frames
            print(f"key {SECRET} printed by mistake")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = (tmp_path / "log.txt").read_text()
    assert "parameter selection table" in text and "a warning" in text
    assert "a library's chatter" not in text  # other libraries: WARNING and above only
    assert text.count("a warning") == 1  # once, though the console handler also wrote it
    assert "train 4/4" in text and "train 1/4" not in text and "\r" not in text
    assert SECRET not in text and "key <secret> printed" in text
    shown = capsys.readouterr().err
    assert "a warning" in shown and "parameter selection table" not in shown
    assert root.level == level and handler.filters == []  # everything removed afterwards


def test_log_txt_records_the_error_that_ended_the_run(tmp_path):
    with pytest.raises(ConfigError), logfile.run_log(tmp_path):
        raise ConfigError("train.epochs must be > 0")
    assert "error: train.epochs must be > 0" in (tmp_path / "log.txt").read_text()


def test_tensorboard_needs_its_extra_only_when_asked(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    tensorboard.check_available(False)
    with pytest.raises(ConfigError, match=r"jaxwm\[tensorboard\]"):
        tensorboard.check_available(True)


def test_tensorboard_events_hold_every_epochs_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    rows = [{"epoch": e, "loss": 1.0 / e, "train_acc": 0.5, "lr": 0.1 / e, "img_per_s": 9.0,
             "epoch_s": 1.0} for e in (1, 2)]  # fmt: skip
    with tensorboard.epoch_writer(tmp_path, enabled=True) as on_epoch:
        for row in rows:
            on_epoch(row)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    data = events.read_bytes()
    assert b"train/learning_rate" in data and b"train/loss" in data
    with tensorboard.epoch_writer(tmp_path / "off", enabled=False) as on_epoch:
        assert on_epoch is None
    assert not (tmp_path / "off").exists()


def test_embedding_events_are_tagged_per_set_and_off_by_default(tmp_path):
    with tensorboard.embed_writer(tmp_path / "off", enabled=False) as on_epoch:
        assert on_epoch is None
    assert not (tmp_path / "off").exists()
    pytest.importorskip("tensorboardX")
    with tensorboard.embed_writer(tmp_path, enabled=True) as on_epoch:
        on_epoch(1, {"epoch": 1, "loss": 2.0, "retention": 0.5, "lr": 1e-3, "stages": 1,
                     "trainable": ["head"]})  # fmt: skip
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    data = events.read_bytes()
    assert b"embed/set1/retention" in data and b"embed/set1/learning_rate" in data
    assert b"embed/set0" not in data  # the set index given, not a default
