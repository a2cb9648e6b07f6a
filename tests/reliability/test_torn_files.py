"""Drill: a full disk in the middle of a write leaves no torn config, and a torn metrics line does not stop a resume.

The full disk is real: a child process writes under ``RLIMIT_FSIZE`` (with ``SIGXFSZ`` ignored every
write past the limit fails with ``EFBIG``, as ``ENOSPC`` would).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from agentpo.config import LoggingConfig, config_from_dict, save_config
from agentpo.files import JsonLinesLog
from agentpo.training.logger import METRICS_FILE, MetricsLogger, read_metrics

QUIET = LoggingConfig(tensorboard=False, progress=False)


def run_with_file_size_limit(limit: int, code: str) -> subprocess.CompletedProcess[str]:
    prelude = f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """
    script = textwrap.dedent(prelude) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_a_full_disk_during_the_config_rewrite_keeps_the_old_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(config_from_dict({"model": {"source": "tiny"}, "run_dir": "runs/old"}), path)
    before = path.read_text()
    code = f"""
        from agentpo.config import config_from_dict, save_config
        try:
            save_config(config_from_dict({{"model": {{"source": "tiny"}}, "run_dir": "runs/new"}}), {str(path)!r})
        except OSError as err:
            print("write failed:", err.strerror)
    """
    out = run_with_file_size_limit(200, code)
    assert "write failed" in out.stdout, out.stderr
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left behind


def test_a_metrics_line_torn_by_a_full_disk_does_not_stop_the_resume(tmp_path: Path) -> None:
    code = f"""
        from agentpo.config import LoggingConfig
        from agentpo.training.logger import MetricsLogger
        logger = MetricsLogger({str(tmp_path)!r}, LoggingConfig(tensorboard=False, progress=False), total_steps=9)
        try:
            for step in range(1, 10):
                logger.log(step, {{"success_rate": step / 10, "reward_mean": 0.123456789}})
        except OSError as err:
            print("write failed at step", step)
    """
    out = run_with_file_size_limit(150, code)
    assert "write failed at step" in out.stdout, out.stderr
    raw = (tmp_path / METRICS_FILE).read_bytes()
    assert not raw.endswith(b"\n")  # the drill did tear a line
    whole = read_metrics(tmp_path)  # a reader skips the torn line without touching the file
    assert [r["step"] for r in whole] == list(range(1, len(whole) + 1))
    assert (tmp_path / METRICS_FILE).read_bytes() == raw

    # The resume (from the checkpoint of step 1) rewrites the file whole, then appends cleanly.
    logger = MetricsLogger(tmp_path, QUIET, total_steps=9, start_step=1)
    logger.log(2, {"success_rate": 0.5})
    logger.close()
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_a_last_line_of_garbage_is_dropped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n\x00\x00\x00\n')  # zeroed blocks after a crash, newline included
    log = JsonLinesLog(path)
    assert log.read(repair=False) == [{"a": 1}, {"b": 2}]
    assert path.read_bytes().endswith(b"\x00\x00\x00\n")
    assert log.read() == [{"a": 1}, {"b": 2}]
    log.append([{"c": 3}])
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n{"c": 3}\n'
