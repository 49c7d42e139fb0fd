"""Faust web views over the processors' tables (JSON, on PROCESSORS_WEB_HOST:WEB_PORT).

Each worker answers from the partitions it holds. With several workers a key lives on one of
them: a miss answers 404 with the list of workers (`/kis/workers/`) to ask instead.

- `/kis/`                          streams, partitions and counters of this worker
- `/kis/workers/`                  every worker's URL and the table partitions it holds
- `/kis/bars/{symbol}/{venue}/`    the open bar and the published bars still revisable
- `/kis/program/{venue}/`          the venue total and each symbol's latest net-buy
- `/kis/program/{venue}/{symbol}/` a symbol's latest program record
- `/kis/spread/{symbol}/`          the latest KRX and NXT level-1 quotes of a symbol
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from processors.bars import bar_record
from processors.spread import latest_quotes

if TYPE_CHECKING:
    from processors.app import Processors


def register(p: Processors) -> None:
    app = p.app

    def miss(web: View, what: str) -> Response:
        return web.json(
            {"error": f"{what} is not held by this worker", "workers": "/kis/workers/"},
            status=404,
        )

    def table(name: str) -> Any:
        return app.tables.get(name)

    @app.page("/kis/")
    async def index(web: View, request: Request) -> Response:
        return web.json(
            {
                "app_id": p.settings.app_id,
                "streams": list(p.settings.streams),
                "partitions": p.partitions,
                "counters": {name: dict(s.counts) for name, s in p.stats.items()},
                "offset_gaps": p.offset_gaps,
                "schema_registry": p.schemas.state(),
            }
        )

    @app.page("/kis/workers/")
    async def workers(web: View, request: Request) -> Response:
        return web.json({"tables": app.router.tables_metadata()})

    @app.page("/kis/bars/{symbol}/{venue}/")
    async def bars(web: View, request: Request, symbol: str, venue: str) -> Response:
        bars_table = table("bars")
        key = f"{symbol}|{venue}"
        state = bars_table.get(key) if bars_table is not None else None
        if state is None:
            return miss(web, key)
        prefix = key + "|"
        published = sorted(
            (
                bar_record(symbol, venue, value["bar"], value["rev"])
                for k, value in list(bars_table.items())
                if k.startswith(prefix)
            ),
            key=lambda bar: bar["window_start"],
        )
        acc = state.get("bar")
        return web.json(
            {
                "open": bar_record(symbol, venue, acc, 0) if acc is not None else None,
                "newest_window_start": state["newest"],
                "published": published,
            }
        )

    @app.page("/kis/program/{venue}/")
    async def program_venue(web: View, request: Request, venue: str) -> Response:
        market = table("program_market")
        head = market.get(venue) if market is not None else None
        if head is None:
            return miss(web, venue)
        prefix = venue + "|"
        symbols = {
            key[len(prefix) :]: {"net_qty": value["net"][0], "net_amount": value["net"][1]}
            for key, value in list(market.items())
            if key.startswith(prefix) and value["day"] == head["day"]
        }
        return web.json(
            {
                "venue": venue,
                "business_date": head["day"],
                "net_qty": sum(v["net_qty"] for v in symbols.values()),
                "net_amount": sum(v["net_amount"] for v in symbols.values()),
                "symbols": symbols,
            }
        )

    @app.page("/kis/program/{venue}/{symbol}/")
    async def program_symbol(web: View, request: Request, venue: str, symbol: str) -> Response:
        symbols = table("program_symbols")
        state = symbols.get(f"{symbol}|{venue}") if symbols is not None else None
        if state is None:
            return miss(web, f"{symbol}|{venue}")
        return web.json(state["record"])

    @app.page("/kis/spread/{symbol}/")
    async def spread(web: View, request: Request, symbol: str) -> Response:
        books = table("spread_books")
        state = latest_quotes(books, symbol) if books is not None else None
        if state is None:
            return miss(web, symbol)
        fields = ("bid", "ask", "bid_qty", "ask_qty", "event_time", "received_at", "offset")
        return web.json(
            {
                venue: dict(zip(fields, quote, strict=True)) if quote is not None else None
                for venue, quote in state.items()
            }
        )
