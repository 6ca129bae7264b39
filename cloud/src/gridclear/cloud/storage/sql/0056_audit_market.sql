-- The audit log covers the market: every order placed, amended or cancelled, and every
-- change of the market's configuration, written by triggers in the transaction that
-- makes the change (so an entry exists exactly when its change committed, whichever
-- path made it: the API, a bulk placement, an account disabled or deleted).
--
-- Statement-level triggers with transition tables: a bulk placement of 256 orders
-- adds one INSERT ... SELECT, not 256 trigger calls.
--
-- Who acted: the order's owner, unless the transaction set `gridclear.actor_id`
-- (an admin disabling an account, say) with set_config(..., true); why, in
-- `gridclear.audit_reason` (e.g. `account_disabled`). Both are transaction-local.

CREATE FUNCTION audit_actor(fallback bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('gridclear.actor_id', true), '')::bigint, fallback)
$$;

CREATE FUNCTION audit_reason() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('gridclear.audit_reason', true), '')
$$;

CREATE FUNCTION audit_orders_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (event, outcome, actor_id, subject, details)
    SELECT 'order.place', 'success', audit_actor(n.user_id), n.id::text,
           jsonb_build_object('side', n.side, 'timeslotId', n.timeslot_id,
                              'meterId', n.meter_id, 'quantityWh', n.quantity_wh,
                              'price', n.price, 'owner', n.user_id)
    FROM inserted n ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_orders_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (event, outcome, actor_id, subject, details)
    SELECT CASE WHEN n.status = 'cancelled' THEN 'order.cancel' ELSE 'order.amend' END,
           'success', audit_actor(n.user_id), n.id::text,
           jsonb_strip_nulls(jsonb_build_object(
               'side', n.side, 'timeslotId', n.timeslot_id, 'owner', n.user_id,
               'version', n.version,
               'quantityWh', jsonb_build_array(o.quantity_wh, n.quantity_wh),
               'price', jsonb_build_array(o.price, n.price),
               'reason', audit_reason()))
    FROM updated n JOIN previous o ON o.id = n.id
    WHERE o.status = 'active'
      AND (n.status = 'cancelled'
           OR (n.status = 'active'
               AND (n.quantity_wh, n.price) IS DISTINCT FROM (o.quantity_wh, o.price)))
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_audit_insert AFTER INSERT ON orders
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION audit_orders_inserted();
CREATE TRIGGER orders_audit_update AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS previous NEW TABLE AS updated FOR EACH STATEMENT
    EXECUTE FUNCTION audit_orders_updated();

CREATE FUNCTION audit_market_config() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed jsonb;
BEGIN
    SELECT jsonb_object_agg(n.key, jsonb_build_array(o.value, n.value)) INTO changed
    FROM jsonb_each(to_jsonb(NEW) - 'updated_at' - 'updated_by' - 'singleton') n
    JOIN jsonb_each(to_jsonb(OLD)) o ON o.key = n.key
    WHERE n.value IS DISTINCT FROM o.value;
    INSERT INTO audit_log (event, outcome, actor_id, details)
    VALUES ('market.config.change', 'success', audit_actor(NEW.updated_by),
            jsonb_build_object('changed', COALESCE(changed, '{}'::jsonb)));
    RETURN NULL;
END
$$;

CREATE TRIGGER market_config_audit AFTER UPDATE ON market_config
    FOR EACH ROW EXECUTE FUNCTION audit_market_config();
