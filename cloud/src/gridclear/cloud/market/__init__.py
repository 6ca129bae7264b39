"""The market: delivery slots, orders and their clearing (DESIGN §8).

:mod:`.clearing` is the pure clearing engine; :mod:`.book_json` reads order books
and writes results in the documented JSON form (docs/MARKET.md).
"""

__all__: list[str] = []
