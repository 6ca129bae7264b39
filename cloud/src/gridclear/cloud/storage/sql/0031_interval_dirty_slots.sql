-- A queued interval range is either the time range of new samples (slots = false: the
-- refresh widens it to the samples around them) or, when a refresh stopped at its
-- bound, the exact first and last slot start still to recompute (slots = true).
-- Workers of an older version read every row as samples: a little more work, no harm.
ALTER TABLE interval_dirty ADD COLUMN slots boolean NOT NULL DEFAULT false;
