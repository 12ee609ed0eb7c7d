from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def labelled_small() -> tuple[Path, pl.DataFrame]:
    folder = FIXTURES / "labelled_small"
    return folder / "access.log", pl.read_csv(folder / "labels.csv")


# CI reruns must be reproducible: same examples every run (explore freely on a workstation).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
