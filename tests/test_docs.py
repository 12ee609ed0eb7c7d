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


def test_every_enforcer_and_watch_option_is_documented() -> None:
    """Back-ends register in one place; each registered enforcer is described in
    docs/decisions.md, and every option of `mlguard watch` appears in docs/watch.md."""
    import typer.main

    from mlguard.cli import app
    from mlguard.enforcers import ENFORCERS

    decisions = (ROOT / "docs" / "decisions.md").read_text()
    for name in ENFORCERS:
        assert f"- **{name}**" in decisions, name
    watch_doc = (ROOT / "docs" / "watch.md").read_text()
    watch = typer.main.get_command(app).commands["watch"]  # type: ignore[attr-defined]
    for param in watch.params:
        for flag in param.opts:
            if flag.startswith("--") and flag not in ("--verbose", "--seed", "--help"):
                assert flag in watch_doc or flag.split("/")[0] in watch_doc, flag
