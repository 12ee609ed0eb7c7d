from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def labelled_small() -> tuple[Path, pl.DataFrame]:
    folder = FIXTURES / "labelled_small"
    return folder / "access.log", pl.read_csv(folder / "labels.csv")
