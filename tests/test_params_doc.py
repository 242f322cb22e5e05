"""`params.md` documents exactly the config: every key, in its group, with its type and default;
and the commands in the docs only use flags that exist."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest

from kronos_engine.cli import launch, sweep
from kronos_engine.cli.flags import GROUP_TITLES, field_default, format_value
from kronos_engine.config import TrainConfig, field_type

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.md"
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| `([^`]*)` \| (.+) \|$")
CLI_ONLY_FLAGS = {"config", "help", "skip-tokenizer", "skip-predictor", "skip-data-process"}
CLI_ONLY_FLAGS |= {"skip-basemodel", "skip-existing"}  # the public train_sequential.py flags
CLI_ONLY_FLAGS.add(launch.FLAG.lstrip("-"))
CLI_ONLY_FLAGS |= set(sweep.FLAGS)  # scripts/sweep.py's own: --workers, --storage, --study_name


def documented_keys() -> dict[str, dict[str, str]]:
    """key -> {group, type, default, meaning} from the tables under '## Keys'."""
    text = PARAMS.read_text(encoding="utf-8")
    section = text.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, dict[str, str]] = {}
    group = None
    for line in section.splitlines():
        if line.startswith("### "):
            group = line[4:].strip().lower()
            continue
        match = ROW.match(line)
        if match:
            key, tp, default, meaning = match.groups()
            assert key not in found, f"params.md documents '{key}' twice"
            found[key] = {
                "group": group,
                "type": tp.strip(),
                "default": default,
                "meaning": meaning.strip(),
            }
    return found


def type_name(key: str) -> str:
    tp, optional = field_type(key), False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp, optional = next(a for a in typing.get_args(tp) if a is not type(None)), True
    if typing.get_origin(tp) is list:
        name = f"list[{typing.get_args(tp)[0].__name__}]"
    else:
        name = tp.__name__
    return name + (" or null" if optional else "")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def test_every_config_key_is_documented():
    missing = sorted(set(FIELDS) - set(documented_keys()))
    assert not missing, f"config keys missing from params.md: {missing}"


def test_every_documented_key_exists():
    stale = sorted(set(documented_keys()) - set(FIELDS))
    assert not stale, f"params.md documents keys that no longer exist: {stale}"


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_group_type_and_default_match_the_config(key):
    doc = documented_keys().get(key)
    if doc is None:
        pytest.fail(f"{key} is not documented")
    f = FIELDS[key]
    assert doc["group"] == GROUP_TITLES[f.metadata["group"]].lower(), key
    assert doc["type"] == type_name(key), key
    assert doc["default"] == format_value(field_default(f)), key
    assert len(doc["meaning"]) > 10, key


def test_every_command_line_only_flag_is_documented():
    """`--nprocs`, `--config`, ... are no config keys, so the key tables cannot hold them: a
    table of their own lists exactly the flags the commands take besides the keys."""
    text = PARAMS.read_text(encoding="utf-8")
    section = text.split("\n## Command-line flags that are not config keys\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `--([\w-]+)[^`]*` \|", section, flags=re.MULTILINE))
    assert documented == CLI_ONLY_FLAGS
    assert launch.FLAG.lstrip("-") in documented


def test_public_name_table_points_at_existing_keys():
    text = PARAMS.read_text(encoding="utf-8")
    table = text.split("### Names in the public fine-tuning config", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 8
    for row in rows:
        ours = row.split("|")[2]
        key = re.search(r"`(\w+)`", ours).group(1)
        assert key in FIELDS, f"params.md maps a public name to unknown key '{key}'"


@pytest.mark.parametrize("doc", ["README.md", "params.md"])
def test_commands_in_the_docs_use_existing_flags(doc):
    path = REPO / doc
    if not path.exists():
        pytest.fail(f"{doc} is missing")
    used = set()
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")  # join continued lines
    for line in text.splitlines():
        for script in ("scripts/train.py", "scripts/pipeline.py", "scripts/sweep.py"):
            if script in line:
                used.update(re.findall(r"\s--([\w-]+)", line.split(script, 1)[1]))
    unknown = sorted(used - set(FIELDS) - CLI_ONLY_FLAGS)
    assert not unknown, f"{doc} uses flags that do not exist: {unknown}"


def test_readme_guarantees_name_existing_tests():
    """Each `tests/x.py::name` (or a following `::name`) in the README is a real test."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    refs = re.findall(r"`(tests/\w+\.py)((?:::\w+)?)`((?:, `::\w+`)*)", text)
    assert refs, "README names no tests"
    for path, first, more in refs:
        source = (REPO / path).read_text(encoding="utf-8")
        for name in [first, *re.findall(r"::\w+", more)]:
            if name:
                assert f"def {name[2:]}(" in source, f"README names {path}{name}, which is gone"
