-- Every key gets the start of its validity. A key registered without one accepted any
-- signing time before its end, so a message claiming to be signed in 1970 (a gateway
-- whose clock reset, or a forged date) was judged by its key as if it were current.
-- Keys are valid from a day before they were registered (devices/registry.py says
-- why); this gives the existing keys the same, from their creation time, kept before
-- their end when they have one.
UPDATE device_keys
SET valid_from = LEAST(created_at - interval '1 day', valid_until - interval '1 millisecond')
WHERE valid_from IS NULL;

-- From now on a key always has one, whichever statement inserts it.
ALTER TABLE device_keys
    ALTER COLUMN valid_from SET DEFAULT now() - interval '1 day',
    ALTER COLUMN valid_from SET NOT NULL;
