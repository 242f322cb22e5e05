"""Fetch K-lines from Sina or a ccxt exchange into a local folder, without training.

    python scripts/download.py --source sina --instruments sh600000 --freq 5min --data_path data/sina
    python scripts/download.py --source ccxt --exchange binance --instruments BTC/USDT \\
        --freq 1h --data_path data/binance --fetch_since 2024-01-01

Each later run adds the newer bars; see docs/markets.md.
"""

from kronos_engine.cli.download import main

if __name__ == "__main__":
    raise SystemExit(main())
