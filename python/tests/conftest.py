"""The real fixture models, where `cargo xtask fixtures` caches them (crates/pot-formats/src/fixtures.rs)."""

import os
from pathlib import Path

import pytest


def fixtures_dir() -> Path:
    if os.environ.get("POT_FIXTURES"):
        return Path(os.environ["POT_FIXTURES"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
    return Path(base) / "pot" / "fixtures"


@pytest.fixture(scope="session")
def smollm2() -> str:
    path = fixtures_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        # A missing fixture fails, as in the Rust tests: these tests exist to run the real model.
        pytest.fail(f"fixture model {path} is missing: run `cargo xtask fixtures` first")
    return str(path)


@pytest.fixture()
def key() -> bytes:
    return bytes([7]) * 32
