"""The built wheel carries its data: migrations, the rate card and the price list travel with the code.

An editable install reads them from the checkout and would hide a miss in `package-data`, so this
builds the wheel, unpacks it outside the checkout and runs it there, shadowing the editable install.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_FILES = ("shared/migrations/env.py", "shared/migrations/script.py.mako",
              "shared/migrations/versions/0001_initial_schema.py", "shared/messaging/rate_cards/us.json",
              "shared/billing/price_list.json")


def test_the_wheel_upgrades_a_database_and_prices_an_estimate_outside_the_checkout(tmp_path):
    # given the wheel, built from the tree and unpacked away from it
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("creditq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA_FILES) <= names, set(DATA_FILES) - names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": f"sqlite:///{elsewhere / 'creditq.db'}"}

    def creditq(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "creditq", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=120)

    # when
    upgraded = creditq("db", "upgrade")
    estimate = creditq("estimate", "Hello from the wheel", "--to", "+14155550100", "--json")
    origin = subprocess.run([sys.executable, "-c", "import shared, shared.billing.price_list as p; "
                             "print(shared.__file__); print(len(p.default_price_list().tiers))"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)

    # then
    assert upgraded.returncode == 0, upgraded.stderr
    assert (elsewhere / "creditq.db").stat().st_size > 0
    assert estimate.returncode == 0, estimate.stderr
    priced = json.loads(estimate.stdout)
    assert priced["segments"] == 1 and priced["credits_total"] == "1"
    module_file, tiers = origin.stdout.split()
    assert module_file.startswith(str(site)), module_file
    assert int(tiers) > 0
