"""`scripts/download.py`: fetch a market source into its local folder, without training.

    python scripts/download.py --source sina --instruments sh600000,sz000001 --freq 5min \\
        --data_path data/sina_5min
    python scripts/download.py --source ccxt --exchange binance --instruments BTC/USDT \\
        --freq 1h --data_path data/binance_1h --fetch_since 2024-01-01

Run it again later and each symbol's file grows by the newer bars (`data.market_store`);
`scripts/pipeline.py --skip-data-process` then trains on the folder as it is. The flags are the
config keys a fetch reads (`--config FILE.yaml` may hold them too; flags win). A mistake, an
offline service or an unknown symbol is one `error:` line and exit code 2, with every stored
file as it was.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from kronos_engine.cli.flags import flag_values, parse
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.config import TrainConfig, merged_values
from kronos_engine.data import DataSpec
from kronos_engine.data.markets import MARKET_SOURCES, fetch_market
from kronos_engine.errors import ConfigError, UsageError

# The config keys a fetch reads, in the order `--help` shows them.
DOWNLOAD_KEYS = (
    "data_path", "instruments", "freq", "exchange", "fetch_since", "sina_url",
    "exchange_api_url", "fetch_timeout", "fetch_retries", "fetch_backoff", "fetch_interval",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """Raises instead of printing usage + exiting, so the shell reports one line, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def build_download_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Fetch K-lines from Sina or a ccxt exchange into data_path (one CSV file "
        "per symbol, grown by each later run), without training.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--source", choices=MARKET_SOURCES, help="where to fetch from")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with these keys")
    fields = TrainConfig.__dataclass_fields__
    for key in DOWNLOAD_KEYS:
        default = fields[key].default
        text = f"{fields[key].metadata['help']} (default: {default})".replace("%", "%%")
        parser.add_argument(f"--{key}", metavar="VALUE", help=text)
    return parser


def load_download_spec(argv: Sequence[str]) -> DataSpec:
    """The checked data settings of a download command line."""
    args = parse(build_download_parser(), argv)
    values = merged_values(getattr(args, "config", None), flag_values(args))
    if getattr(args, "source", None):
        values["data_source"] = args.source
    if values.get("data_source") not in MARKET_SOURCES:
        raise ConfigError(
            f"--source: required, one of {list(MARKET_SOURCES)} (data_source in the config is "
            f"'{values.get('data_source', 'demo')}')"
        )
    return DataSpec.from_mapping(TrainConfig.from_dict(values).to_dict())


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/download.py`: parse, fetch, grow the folder, print one line per symbol."""
    setup_logging()
    try:
        spec = load_download_spec(sys.argv[1:] if argv is None else list(argv))
        reports = fetch_market(spec)
        for report in reports:
            print(report.describe(), flush=True)
        print(
            f"train on it with: python scripts/pipeline.py --data_source={spec.data_source} "
            f"--data_path={spec.data_path} --instruments={spec.instruments} --freq={spec.freq}"
            + (f" --exchange={spec.exchange}" if spec.exchange else "")
            + " --skip-data-process",
            flush=True,
        )
        return 0
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
