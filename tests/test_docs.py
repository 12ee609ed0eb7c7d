"""The documentation says what the code does: every feature documented, README commands real."""

from __future__ import annotations

import re

from mlguard.features.catalogue import FEATURES
from tests.conftest import ROOT


def test_every_feature_is_documented_with_its_direction() -> None:
    doc = (ROOT / "docs" / "features.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| \w+ \| (\w+) \|", doc, re.M)}
    assert set(rows) == {f.name for f in FEATURES}
    for f in FEATURES:
        assert rows[f.name] == ("higher" if f.direction > 0 else "lower"), f.name


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quick, re.S)
    assert len(commands) == 2
    assert "mlguard detect examples/access.log" in commands[0]
    test_command = commands[1].split("&& ", 3)[-1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()
