"""Simulated own orders of one account: the source of execution notices (…CNI0 / …CNI9).

Each notice subscription (tr_id, HTS id) gets a desk that places a marketable limit order
every so often and reports it the KIS way: one acceptance notice (CNTG_YN 1) followed by
one or more fills (CNTG_YN 2). Orders do not move the simulated market.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from simulator.clock import hhmmss
from simulator.overseas import fmt4

Build = Callable[[], dict[str, str]]


@dataclass(slots=True)
class Order:
    number: int
    symbol: str
    buy: bool
    qty: int
    price: int
    remaining: int


class OrderDesk:
    def __init__(self, tr_id: str, key: str, seed: int, *, overseas: bool) -> None:
        self.tr_id = tr_id
        self.key = key
        self.overseas = overseas
        self.rng = random.Random(f"{seed}:orders:{tr_id}:{key}")
        self.account = f"{self.rng.randint(10_000_000, 99_999_999)}01"
        self._order_no = self.rng.randint(1_000, 9_000) * 1_000
        self.active: Order | None = None

    def next_delay(self, interval: float) -> float:
        if self.active is not None:
            return self.rng.uniform(0.5, 3.0)
        return self.rng.expovariate(1 / interval)

    def step(
        self, t: float, prices: dict[str, tuple[int, int]], names: dict[str, str]
    ) -> list[Build]:
        """Advance this desk: a fill of the working order, or a new order's acceptance."""
        rng = self.rng
        order = self.active
        if order is not None:
            qty = order.remaining if rng.random() < 0.5 else max(1, order.remaining // 2)
            order.remaining -= qty
            if order.remaining <= 0:
                self.active = None
            return [self._builder(order, t, names, filled=qty)]
        if not prices:
            return []
        symbol = sorted(prices)[rng.randrange(len(prices))]
        bid, ask = prices[symbol]
        buy = rng.random() < 0.5
        qty = rng.randint(1, 20) * (1 if self.overseas else 10)
        self._order_no += 1
        order = Order(self._order_no, symbol, buy, qty, ask if buy else bid, qty)
        self.active = order
        return [self._builder(order, t, names, filled=0)]

    def _builder(self, order: Order, t: float, names: dict[str, str], *, filled: int) -> Build:
        execution = filled > 0
        price = fmt4(order.price) if self.overseas else str(order.price)
        common = {
            "CUST_ID": self.key,
            "ACNT_NO": self.account,
            "ODER_NO": f"{order.number:010d}",
            "OODER_NO": "0000000000",
            "SELN_BYOV_CLS": "02" if order.buy else "01",
            "RCTF_CLS": "0",
            "STCK_SHRN_ISCD": order.symbol[4:] if self.overseas else order.symbol,
            "CNTG_QTY": str(filled if execution else order.qty),
            "CNTG_UNPR": price if execution else "0",
            "STCK_CNTG_HOUR": hhmmss(t),
            "RFUS_YN": "0",
            "CNTG_YN": "2" if execution else "1",
            "ACPT_YN": "1",
            "BRNC_NO": "01",
            "ODER_QTY": str(order.qty),
            "ACNT_NAME": "홍길동",
        }
        if self.overseas:
            common.update(
                ODER_KIND2="2",
                CNTG_ISNM=order.symbol[4:],
                ODER_COND="0",
                DEBT_GB="00",
                DEBT_DATE="",
                START_TM="",
                END_TM="",
                TM_DIV_TP="",
                CNTG_UNPR12=f"{order.price / 10_000:.8f}" if execution else "0",
            )
        else:
            common.update(
                ODER_KIND="00",
                ODER_COND="0",
                ORD_COND_PRC="0",
                ORD_EXG_GB="1",
                POPUP_YN="Y",
                FILLER="",
                CRDT_CLS="10",
                CRDT_LOAN_DATE="",
                CNTG_ISNM40=names.get(order.symbol, order.symbol),
                ODER_PRC=price,
            )
        return lambda: common
