"""`creditq db upgrade` is safe while the release before still serves: every migration after the marker revision
only adds, unless it is listed as a documented destructive step (shared.migrate)."""

import ast
import re
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from shared.migrate import ADDITIVE_SINCE, DESTRUCTIVE_STEPS, alembic_config

DESTRUCTIVE_CALLS = {"drop_column", "drop_table", "rename_table"}
DESTRUCTIVE_SQL = re.compile(r"\b(DROP\s+(TABLE|COLUMN|FUNCTION)|RENAME\s+(TO|COLUMN)|"
                             r"ALTER\s+COLUMN\s+\S+\s+(SET\s+NOT\s+NULL|TYPE))\b", re.IGNORECASE)


def destructive_operations(source: str) -> list[str]:
    """What `upgrade()` in a migration's source drops or renames (its downgrade may: it undoes an addition)."""
    upgrade = next(node for node in ast.parse(source).body
                   if isinstance(node, ast.FunctionDef) and node.name == "upgrade")
    found = []
    for node in ast.walk(upgrade):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            keywords = {keyword.arg for keyword in node.keywords}
            if name in DESTRUCTIVE_CALLS or (name == "alter_column" and keywords & {"new_column_name", "type_"}) or (
                    name == "alter_column" and any(k.arg == "nullable" and isinstance(k.value, ast.Constant)
                                                   and k.value.value is False for k in node.keywords)):
                found.append(f"{name} (line {node.lineno})")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and DESTRUCTIVE_SQL.search(node.value):
            found.append(f"SQL {DESTRUCTIVE_SQL.search(node.value).group(0)!r} (line {node.lineno})")
    return found


def revisions_after_the_marker() -> list:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [script for script in scripts.walk_revisions(base=ADDITIVE_SINCE, head="heads")
            if script.revision != ADDITIVE_SINCE]


def test_the_marker_is_a_revision_and_later_ones_exist():
    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(ADDITIVE_SINCE) is not None
    assert revisions_after_the_marker()


@pytest.mark.parametrize("script", revisions_after_the_marker(), ids=lambda script: script.revision)
def test_every_migration_after_the_marker_only_adds(script):
    found = destructive_operations(Path(script.path).read_text())

    assert not found or script.revision in DESTRUCTIVE_STEPS, (
        f"{script.revision} drops or renames ({', '.join(found)}) while the release before may still serve: "
        "split it (add now, drop in a later release) or list it in shared.migrate.DESTRUCTIVE_STEPS with why")


@pytest.mark.parametrize("upgrade", [
    "op.drop_column('messages', 'body')",
    "with op.batch_alter_table('messages') as batch:\n        batch.drop_column('body')",
    "op.drop_table('opt_outs')",
    "op.rename_table('messages', 'texts')",
    "op.alter_column('messages', 'to', new_column_name='recipient')",
    "op.alter_column('messages', 'error_code', nullable=False)",
    "op.execute('ALTER TABLE messages DROP COLUMN body')",
    "op.execute('ALTER TABLE messages RENAME COLUMN body TO text')",
])
def test_the_check_catches_each_destructive_step(upgrade):
    source = f"def upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    op.drop_table('kept')\n"

    assert destructive_operations(source)


def test_the_check_lets_additions_and_a_downgrade_that_drops_pass():
    source = ("def upgrade():\n    op.add_column('messages', sa.Column('redacted_at', sa.DateTime(), nullable=True))\n"
              "    op.create_index('ix', 'messages', ['updated_at'], postgresql_concurrently=True)\n\n\n"
              "def downgrade():\n    op.drop_column('messages', 'redacted_at')\n")

    assert destructive_operations(source) == []
