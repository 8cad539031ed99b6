"""Run the shop backend: ``python -m examples.shop_backend --credentials creds.json``.

``--credentials`` reads what ``minipay serve --credentials-out`` wrote in sandbox mode (the service URL,
the first sub-merchant's API key and currency). Otherwise, or to override it, set ``SHOP_MINIPAY_URL``,
``SHOP_MINIPAY_API_KEY``, ``SHOP_CURRENCY``, ``SHOP_PUBLIC_URL`` (where Minipay reaches this backend's
webhook) and, when the webhook endpoint was registered elsewhere, ``SHOP_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import uvicorn

from examples.shop_backend.app import ShopSettings, create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.shop_backend", description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=Path, help="JSON written by `minipay serve --credentials-out`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--db", default="shop.db", help="SQLite file of sessions, orders and webhook events")
    args = parser.parse_args(argv)

    values: dict[str, str] = {}
    if args.credentials:
        world = json.loads(args.credentials.read_text(encoding="utf-8"))
        sub = world["sub_merchants"][0]
        values = {"minipay_url": world["service_url"], "api_key": sub["api_key"], "currency": sub["currency"]}
    for name in ("minipay_url", "api_key", "currency", "public_url", "webhook_secret"):
        env = os.environ.get("SHOP_" + name.upper().replace("API_KEY", "MINIPAY_API_KEY"))
        if env:
            values[name] = env
    if "minipay_url" not in values or "api_key" not in values:
        parser.error("give --credentials, or SHOP_MINIPAY_URL and SHOP_MINIPAY_API_KEY")
    settings = ShopSettings(
        minipay_url=values["minipay_url"],
        api_key=values["api_key"],
        currency=values.get("currency", "HKD"),
        public_url=values.get("public_url", f"http://{args.host}:{args.port}"),
        db_path=args.db,
        webhook_secret=values.get("webhook_secret"),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
