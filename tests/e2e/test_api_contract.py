"""The served OpenAPI contract, held against the real processes by schemathesis.

`creditq web` (with its worker, the Twilio simulator, Redis and PostgreSQL) is fuzzed from its own
`/v1/openapi.json`: once with the operator key, once with an account's key on its own account, through
every phase (the schema's examples, boundary values, random data with NUL characters and other scripts'
digits, and stateful chains along the document's links). Every answer must be documented, match its
schema and content type, and none may be a 5xx. Bounded: a fixed seed and a few examples per operation.
One worker: with two, Hypothesis' source parsing in threads trips a CPython 3.11 AST bug now and then.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_send_pipeline_e2e import new_account
from tests.support.stack import ADMIN_KEY, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
MAX_EXAMPLES = 15
SEED = 20261


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_contract",
               worker_processes=1, worker_threads=2, env={"SHARED_SHORT_CODE": "12345"}) as running:
        yield running


@pytest.fixture(scope="module")
def tenant(stack) -> tuple[str, str]:
    """An account with a sender number and credits, so its key's requests get past 404 and 402."""
    account_id, headers, _ = new_account(stack, 199, "1000")  # its sender is the examples' +14155550199
    return account_id, headers["Authorization"]


def schemathesis(stack, tmp_path: Path, authorization: str, parameters: dict[str, str]) -> subprocess.CompletedProcess:
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"{name}" = "{value}"\n' for name, value in parameters.items()))
    return subprocess.run(
        [str(Path(sys.executable).with_name("st")), "--config-file", str(config), "--no-color", "run",
         f"{stack.url}/v1/openapi.json", "--header", f"Authorization: {authorization}",
         "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
         "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "30",
         "--report", "junit", "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_with_the_operator_key_no_answer_is_a_5xx_or_breaks_the_contract(stack, tmp_path):
    run = schemathesis(stack, tmp_path, f"Bearer {ADMIN_KEY}", {})

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:] + stack.log("web")[-5_000:]


def test_with_an_account_key_on_its_own_account_no_answer_is_a_5xx_or_breaks_the_contract(stack, tenant, tmp_path):
    account_id, authorization = tenant

    run = schemathesis(stack, tmp_path, authorization, {"path.account_id": account_id})

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:] + stack.log("web")[-5_000:]
