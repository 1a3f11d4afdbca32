"""The gateway's settings: where the participants are, saga deadlines and retries, key
defaults. Environment variables ``LOYALTY_GATEWAY_<NAME>``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_GATEWAY_", extra="ignore")

    listen: str = "127.0.0.1:50051"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_gateway"
    # host:port of each participant service.
    points_addr: str = "127.0.0.1:50052"
    levels_addr: str = "127.0.0.1:50053"
    mall_addr: str = "127.0.0.1:50054"
    lottery_addr: str = "127.0.0.1:50055"
    risk_addr: str = "127.0.0.1:50056"

    # --- events ---
    # Single RecordEvent calls are coalesced into batches per app (natural batching: a batch
    # leaves when the previous one has returned, with whatever queued meanwhile); this many
    # batches of one app may be in flight at once.
    event_batches_in_flight: int = Field(default=1, ge=1, le=64)

    # --- sagas ---
    # After a redemption of an item ends OUT_OF_STOCK, further redemptions of it are refused
    # at the door (recorded, OUT_OF_STOCK, nothing held) for this many seconds: a flash sale's
    # losers hear it without a saga each. Stock that comes back (an expired reservation) is
    # offered again after at most this long; a new program forgets it at once. 0: off.
    sold_out_seconds: float = Field(default=1.0, ge=0, le=60)

    # Deadline of each call to a participant (seconds).
    call_timeout_seconds: float = Field(default=2.0, gt=0)
    # Deadline of a participant's batch call (RecordEvents: up to 500 events in one call).
    batch_call_timeout_seconds: float = Field(default=30.0, gt=0)
    # Attempts per step and drive on UNAVAILABLE / DEADLINE_EXCEEDED, with backoff from here.
    step_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_seconds: float = Field(default=0.05, ge=0)
    # Redeem answers PENDING when its saga has not ended within this time (or the caller's
    # deadline, if sooner); the saga goes on and the recovery loop finishes it if need be.
    redeem_wait_seconds: float = Field(default=8.0, gt=0)
    # A driver owns a saga this long after it renewed its lease; then the recovery loop may
    # take it.
    saga_lease_seconds: float = Field(default=30.0, gt=0)
    # Saga steps (and the saga log's writes) travel in batch calls, one batch in flight per
    # participant and step by default: the most sagas per second. More in flight: a saga waits
    # less for the batch ahead of it under light load, at the cost of smaller batches (peak
    # measured 76 → 56 → 50 sagas/s for 1, 2, 3; latency at light load 311 → 177 → 95 ms).
    saga_batches_in_flight: int = Field(default=1, ge=1, le=16)
    # How often the recovery loop looks for sagas nobody drives.
    recovery_interval_seconds: float = Field(default=1.0, gt=0)
    # How often referrals past their time expire and qualified ones now due are paid.
    referral_interval_seconds: float = Field(default=5.0, gt=0)
    # Drives without an end before a saga is marked NEEDS_ATTENTION (backoff doubles, max 60 s).
    saga_max_drives: int = Field(default=10, ge=1)
    # Reservation and hold TTLs: long enough to outlive a gateway restart.
    reservation_ttl_seconds: int = Field(default=600, ge=1, le=86400)
    hold_ttl_seconds: int = Field(default=900, ge=1, le=604800)
    # Test-only: "before:<step>" / "after:<step>" SIGKILLs the gateway there (fault tests).
    fault_kill_at: str = ""
