"""`kis-stream redecode` refuses to duplicate the live topics unless told to."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kis_stream.cli import main


def test_redecode_into_the_live_prefix_needs_allow_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOPIC_PREFIX", "kis.")
    result = CliRunner().invoke(main, ["redecode", "--to-prefix", "kis."])
    assert result.exit_code != 0
    assert "--allow-duplicates" in result.output and "dedup" in result.output


def test_redecode_reports_invalid_settings_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    result = CliRunner().invoke(main, ["redecode"])
    assert result.exit_code != 0 and "TOPIC_PARTITIONS" in result.output
