"""The domain core keeps its shape: import-linter's contracts (pyproject.toml) hold, and each one can break.

The second test copies the tree, adds one import that goes against the rules and expects the linter
to refuse it, so a contract that silently stopped checking anything would fail here.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "intake", "workers", "scheduler", "creditq", "twilio_sim", "stripe_sim")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports over `tree`, whose packages shadow the installed ones (PYTHONPATH comes first)."""
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=120)


def test_the_domain_core_keeps_its_import_contracts():
    # when
    result = lint_imports(ROOT)

    # then
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, added_import", [
    ("shared/messaging/sending.py", "from shared.campaigns import creation"),  # messaging calls up into campaigns
    ("shared/ledger/book.py", "from shared.twilio import errors"),  # two contexts of one layer meet
    ("shared/models.py", "from shared.ledger import expiry"),  # the root knows a context
    ("shared/billing/purchases.py", "from shared.billing import dunning"),  # dunning imports purchases: a circle
    ("shared/campaigns/fan_out.py", "from shared.billing import price_list"),  # campaigns and billing meet
    ("shared/messaging/parking.py", "import aiohttp"),  # a web framework in the core
    ("shared/db.py", "from workers import resources"),  # the core calls an adapter
])
def test_an_import_against_the_rules_breaks_a_contract(tmp_path, module, added_import):
    # given a copy of the tree with one import added
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as source:
        source.write(f"\n{added_import}  # noqa\n")

    # when
    result = lint_imports(tmp_path)

    # then
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
