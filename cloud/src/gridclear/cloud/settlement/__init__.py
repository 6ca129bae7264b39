"""Settlement of a cleared slot: what each trade delivers and pays (DESIGN §9).

- :mod:`.arithmetic`: the pure amounts of one slot: delivery scaled down pro rata
  when a seller exported less than it sold, payments, and the energy to mint.
"""

__all__: list[str] = []
