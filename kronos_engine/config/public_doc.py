"""params.md's "From the public scripts" tables, generated from the tables of `config.public`
that the loader reads (`tests/test_public_configs.py` checks params.md holds them verbatim)."""

from __future__ import annotations

from kronos_engine.config.public import (
    CSV_RENAMES,
    CSV_SECTIONS,
    CSV_SPECIAL,
    FLAT_NONE,
    FLAT_RENAMES,
    SEQUENTIAL_FLAGS,
)


def markdown_tables() -> str:
    """The tables of params.md's "From the public scripts" (a test keeps them equal)."""
    lines = ["### The `finetune_csv` YAML", "", "| public key | here |", "|---|---|"]
    for name in sorted({*CSV_RENAMES, *CSV_SPECIAL}, key=_csv_order):
        if name in CSV_RENAMES:
            stage, _, key = CSV_RENAMES[name].rpartition(".")
            ours = f"`{key}` in `{stage}:`" if stage else f"`{key}`"
        else:
            ours = CSV_SPECIAL[name]
        lines.append(f"| `{name}` | {ours} |")
    lines += ["", "### `finetune_csv/train_sequential.py` flags", ""]
    lines += ["| public flag | `scripts/pipeline.py` |", "|---|---|"]
    for flag, ours in SEQUENTIAL_FLAGS.items():
        flag_here, _, rest = ours.partition(" ")
        lines.append(f"| `{flag}` | `{flag_here}` {rest} |".replace("  |", " |"))
    lines += ["", "### `finetune/config.py` keys with no key here", ""]
    lines += ["| public `finetune/config.py` | instead |", "|---|---|"]
    lines += [f"| `{name}` | {hint} |" for name, hint in FLAT_NONE.items()]
    lines += ["", "### Names in the public fine-tuning config", ""]
    lines += ["Where the public `finetune/config.py` has a key, the key here has its name (and a "]
    lines += ["flat file with the public names is read as ours); these differ:", ""]
    lines += ["| public `finetune/config.py` | here |", "|---|---|"]
    for name, target in FLAT_RENAMES.items():
        stage, _, key = target.rpartition(".")
        ours = f"`{key}` in `{stage}:`" if stage else f"`{key}`"
        lines.append(f"| `{name}` | {ours}{FLAT_NOTES.get(name, '')} |")
    return "\n".join(lines) + "\n"


FLAT_NOTES = {
    "qlib_data_path": " (with `data_source: qlib`)",
    "accumulation_steps": " (the public scripts accumulate in the tokenizer stage only)",
    "use_comet": " `comet` when true",
    "save_path": " (stages write to `<exp_dir>/<train_type>`)",
}


def _csv_order(name: str) -> tuple[int, str]:
    section = name.split(".", 1)[0]
    order = [*CSV_RENAMES, *CSV_SPECIAL]
    return CSV_SECTIONS.index(section), str(order.index(name)).zfill(3)
