"""``/api/meters`` and ``/api/my/meters``: meters, their readings and interval energy.

Owners see their own meters; operators and admins see every meter. A meter the
caller may not see answers 404, as one that does not exist: its existence is
nobody else's business. Times are ISO 8601 (UTC when no offset is given); energy
is integer Wh, power W.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import Field

from gridclear.cloud import devices
from gridclear.cloud.api.deps import Principal, ServicesDep, require_scope
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.schemas import UtcDatetime
from gridclear.cloud.identity.roles import Role, Scope
from gridclear.cloud.storage.quality import quality_flags
from gridclear.shared.readings import Quality

__all__ = [
    "MAX_RAW_POINTS",
    "MAX_SPAN",
    "IntervalOut",
    "MeterOut",
    "ReadingOut",
    "get_meter",
    "intervals",
    "list_meters",
    "my_meters",
    "readings",
    "router",
]

router = APIRouter(tags=["meters"])

Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.METER_DATA))]

_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)
MAX_RAW_POINTS = 10_000
MAX_SPAN = timedelta(days=366)

_Conn = AsyncConnection[DictRow]

_BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}


class MeterOut(ApiModel):
    id: int
    device_id: str
    name: str
    serial: str | None
    model: str | None
    owner_id: int | None
    role: str
    created_at: datetime
    last_reading_at: datetime | None
    import_wh: int | None
    export_wh: int | None
    power_w: int | None

    @classmethod
    def of(cls, meter: devices.Meter) -> MeterOut:
        return cls(
            id=meter.id,
            device_id=meter.device_id,
            name=meter.name,
            serial=meter.serial,
            model=meter.model,
            owner_id=meter.owner_id,
            role=meter.role.value,
            created_at=meter.created_at,
            last_reading_at=meter.last_reading_at,
            import_wh=meter.import_wh,
            export_wh=meter.export_wh,
            power_w=meter.power_w,
        )


class ReadingOut(ApiModel):
    ts: datetime
    """The sample time, or the start of the bucket."""
    import_wh: int | None
    export_wh: int | None
    power_w: float | None
    """The sample's power, or the bucket's mean."""
    min_power_w: int | None = None
    max_power_w: int | None = None
    samples: int = 1
    quality: int = 0
    """Quality bits: 1 estimated, 2 counter reset, 4 read error, 8 clock unsynchronised."""
    quality_flags: list[Quality] = Field(default_factory=list)
    """The same as the protocol's flag names; for a bucket, any sample's flags."""

    @classmethod
    def of(cls, row: dict[str, Any]) -> ReadingOut:
        return cls(**row, quality_flags=quality_flags(row["quality"]))


class IntervalOut(ApiModel):
    slot_start: datetime
    slot_end: datetime
    import_wh: int | None
    export_wh: int | None
    complete: bool
    interpolated: bool
    counter_reset: bool


def _is_operator(principal: Principal) -> bool:
    return principal.user.role in (Role.OPERATOR, Role.ADMIN)


async def _span(
    conn: _Conn, start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """The asked span; both ends are UTC and within the calendar (:data:`UtcDatetime`).

    Without ``to`` it ends at the market's time (``market_now()``): the wall clock in
    production, and in an accelerated demo the simulated time that readings and slots
    carry, so the default window shows what is being measured and traded now.
    """
    if end is None:
        cur = await conn.execute("SELECT market_now() AS now")
        row = await cur.fetchone()
        end = row["now"] if row is not None else datetime.now(UTC)
    start = start if start is not None else end - default
    if start >= end:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "'from' must be before 'to'")
    if end - start > MAX_SPAN:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "ask for at most 366 days at a time")
    return start, end


async def _visible_meter(
    services: ServicesDep, principal: Principal, meter_id: int
) -> devices.Meter:
    if not 0 < meter_id < 2**63:
        raise ApiError(ErrorCode.NOT_FOUND, "No such meter")
    async with services.pool.connection() as conn:
        try:
            meter = await devices.get_meter(conn, meter_id)
        except devices.NotFoundError:
            raise ApiError(ErrorCode.NOT_FOUND, "No such meter") from None
    if not _is_operator(principal) and meter.owner_id != principal.user.id:
        raise ApiError(ErrorCode.NOT_FOUND, "No such meter")
    return meter


Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get(
    "/api/meters",
    summary="Meters: every meter for operators, the caller's own for participants",
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def list_meters(
    principal: Reader, services: ServicesDep, limit: Limit = 100, offset: Offset = 0
) -> Ok[list[MeterOut]]:
    owner = None if _is_operator(principal) else principal.user.id
    async with services.pool.connection() as conn:
        meters = await devices.list_meters(conn, owner_id=owner, limit=limit, offset=offset)
    return ok([MeterOut.of(m) for m in meters])


@router.get(
    "/api/my/meters",
    summary="The caller's own meters",
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def my_meters(
    principal: Reader, services: ServicesDep, limit: Limit = 100, offset: Offset = 0
) -> Ok[list[MeterOut]]:
    async with services.pool.connection() as conn:
        meters = await devices.list_meters(
            conn, owner_id=principal.user.id, limit=limit, offset=offset
        )
    return ok([MeterOut.of(m) for m in meters])


@router.get(
    "/api/meters/{meter_id}",
    summary="One meter with its latest reading",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def get_meter(meter_id: int, principal: Reader, services: ServicesDep) -> Ok[MeterOut]:
    return ok(MeterOut.of(await _visible_meter(services, principal, meter_id)))


@router.get(
    "/api/meters/{meter_id}/readings",
    summary="Readings of a meter: raw samples, or buckets (1m, 5m, 15m, 1h, 1d) for charts",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def readings(  # noqa: PLR0917 -- FastAPI passes path, query and dependencies by name
    meter_id: int,
    principal: Reader,
    services: ServicesDep,
    start: Annotated[UtcDatetime | None, Query(alias="from")] = None,
    end: Annotated[UtcDatetime | None, Query(alias="to")] = None,
    bucket: Annotated[str | None, Query(description="1m, 5m, 15m, 1h or 1d")] = None,
) -> Ok[list[ReadingOut]]:
    meter = await _visible_meter(services, principal, meter_id)
    if bucket is not None and bucket not in _BUCKETS:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"bucket must be one of {', '.join(_BUCKETS)}")
    async with services.pool.connection() as conn:
        start, end = await _span(conn, start, end, timedelta(hours=1))
        if bucket is None:
            cur = await conn.execute(
                "SELECT ts, import_wh, export_wh, power_w, quality FROM readings"
                " WHERE meter_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
                (meter.id, start, end, MAX_RAW_POINTS),
            )
            rows: list[dict[str, Any]] = await cur.fetchall()
            return ok([ReadingOut.of(row) for row in rows])
        # date_bin works the same on plain PostgreSQL and on TimescaleDB hypertables.
        cur = await conn.execute(
            "SELECT date_bin(%s, ts, timestamptz 'epoch') AS ts,"
            " (array_agg(import_wh ORDER BY ts DESC) FILTER (WHERE import_wh IS NOT NULL))[1]"
            " AS import_wh,"
            " (array_agg(export_wh ORDER BY ts DESC) FILTER (WHERE export_wh IS NOT NULL))[1]"
            " AS export_wh,"
            " avg(power_w)::float8 AS power_w, min(power_w) AS min_power_w,"
            " max(power_w) AS max_power_w, count(*) AS samples,"
            " bit_or(quality)::int AS quality"
            " FROM readings WHERE meter_id = %s AND ts >= %s AND ts < %s"
            " GROUP BY 1 ORDER BY 1 LIMIT %s",
            (timedelta(seconds=_BUCKETS[bucket]), meter.id, start, end, MAX_RAW_POINTS),
        )
        rows = await cur.fetchall()
    return ok([ReadingOut.of(row) for row in rows])


@router.get(
    "/api/meters/{meter_id}/intervals",
    summary="Energy per delivery slot, with completeness (default: the market's last 24 hours)",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def intervals(
    meter_id: int,
    principal: Reader,
    services: ServicesDep,
    start: Annotated[UtcDatetime | None, Query(alias="from")] = None,
    end: Annotated[UtcDatetime | None, Query(alias="to")] = None,
) -> Ok[list[IntervalOut]]:
    meter = await _visible_meter(services, principal, meter_id)
    async with services.pool.connection() as conn:
        start, end = await _span(conn, start, end, timedelta(days=1))
        cur = await conn.execute(
            "SELECT slot_start, slot_end, import_wh, export_wh, complete, interpolated,"
            " counter_reset FROM interval_energy"
            " WHERE meter_id = %s AND slot_start >= %s AND slot_start < %s ORDER BY slot_start",
            (meter.id, start, end),
        )
        rows = await cur.fetchall()
    return ok([IntervalOut(**row) for row in rows])
