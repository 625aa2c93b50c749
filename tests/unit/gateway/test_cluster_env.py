"""The cluster environment file: what it names, and bad lines refused by line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cluster_env import cluster_env


def test_names_values_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "cluster.env"
    path.write_text("# a comment\n\nA=1\n  B=x=y  \nC=\n")
    assert cluster_env(path) == {"A": "1", "B": "x=y", "C": ""}


@pytest.mark.parametrize("line", ["NOEQUALS", "=1", "1A=2", "A B=1"])
def test_a_line_that_is_not_name_equals_value_is_refused_with_its_number(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "cluster.env"
    path.write_text(f"A=1\n{line}\n")
    with pytest.raises(ValueError, match=r"cluster\.env:2: expected NAME=value"):
        cluster_env(path)
