-- The market's clock, shared: the acting scheduler writes its market time on every
-- tick (with the database's time at that moment and its speed), and every order
-- placement, amendment and cancellation judges gate closure by market_now() in its
-- own statement. So API and scheduler agree on the time even when the market runs
-- accelerated or from another epoch (demos), and a scheduler that lags or is down
-- does not keep a slot open past its gate closure.
CREATE TABLE market_clock (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    market_at  timestamptz NOT NULL,
    db_at      timestamptz NOT NULL,
    speed      double precision NOT NULL CHECK (speed > 0 AND speed <= 100000)
);

-- Market time now: the last recorded market time, run forward at its speed since;
-- the database's clock when no scheduler has ever recorded one.
CREATE FUNCTION market_now() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT COALESCE(
        (SELECT market_at + (clock_timestamp() - db_at) * speed FROM market_clock),
        clock_timestamp())
$$;
