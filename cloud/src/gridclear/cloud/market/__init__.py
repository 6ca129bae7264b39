"""The market: delivery slots, orders and their clearing (DESIGN §8).

- :mod:`.clearing`: the pure clearing engine; :mod:`.book_json` reads order books
  and writes results in the documented JSON form (docs/MARKET.md).
- :mod:`.config`: the market's rules; :mod:`.timeslots`: the slot lifecycle as
  pure functions; :mod:`.clock`: market time, with acceleration.
- :mod:`.store`: SQL for slots, orders and trades; :mod:`.service`: clearing a
  slot in one transaction and the scheduler's tick; :mod:`.scheduler`: the loop
  under an advisory lock; :mod:`.events`: what is published in real time.
- :mod:`.accounts`: what an account's lifecycle does to the market (open orders
  cancelled when it is disabled or deleted; unsettled trades that block deletion).
"""

__all__: list[str] = []
