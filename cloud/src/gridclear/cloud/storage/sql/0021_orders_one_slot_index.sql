-- Orders: one index by slot, not two. orders_slot_all_idx (timeslot_id, side, id)
-- serves the clearing's read of a slot's active orders as well as the partial
-- index did, and every order placed no longer pays for updating a second one.
DROP INDEX IF EXISTS orders_timeslot_idx;
