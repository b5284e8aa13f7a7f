"""Legal holds and retention in the admin API (compliance officers and the operator only).

    GET    /hosts/{host}/holds             the holds in force
    POST   /hosts/{host}/holds             hold a user or a group: {"kind", "subject", "reason"}
    DELETE /hosts/{host}/holds/{hold_id}   release a hold (the next purge applies retention)
    GET    /hosts/{host}/retention         the policy in force (days per store, per group)
    POST   /hosts/{host}/retention?dry_run=false   run a purge of the host now; its report

Every route needs the permission `retention` (admin/roles.py), which only the compliance and
operator roles have: the others get 403 with the reason. Holds and purges are recorded in the
audit log by the services (compliance/holds.py, compliance/retention.py) with actor admin:NAME.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ..compliance.holds import HoldError
from ..compliance.retention import RetentionError
from . import roles
from .actions import ActionRefused

if TYPE_CHECKING:
    from ..compliance.holds import LegalHolds
    from ..compliance.retention import Retention
    from .actions import AdminActions
    from .identities import Principal

_STATUS = {"invalid": 422, "missing": 404, "conflict": 409}


class HoldOut(BaseModel):
    id: str
    host: str
    kind: Literal["user", "group"]
    subject: str = Field(description="the user name or the group id")
    reason: str
    actor: str
    created: float


class HoldList(BaseModel):
    holds: list[HoldOut]


class NewHold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["user", "group"]
    subject: str = Field(min_length=1, max_length=1023, description="the user name (local part) or the group id")
    reason: str = Field(min_length=1, max_length=1000, description="the case or matter; recorded in the audit log")


class Released(BaseModel):
    done: str
    hold: HoldOut


class RetentionPolicy(BaseModel):
    host: str
    configured: bool = Field(description="whether the host has a [hosts.retention] table; without one nothing is purged")
    days: dict[str, int] = Field(description="days kept per store for users in no retention group (0: forever)")
    groups: dict[str, int] = Field(description="days kept for members of these groups (they only lengthen retention)")
    journal_may_be_shorter: bool
    purge_interval: float
    holds: int = Field(description="legal holds in force")


class PurgeOut(BaseModel):
    host: str
    now: float
    dry_run: bool
    counts: dict[str, int] = Field(description="records purged (or, in a dry run, that would be) per store")
    cutoffs: dict[str, float | None] = Field(description="per store, the time before which records of users in no "
                                                         "retention group go; null: kept forever")
    held: list[str] = Field(description="user names whose records were kept by legal holds")
    journal_available: bool


class RetentionAdmin:
    """The checked, audited admin side of compliance/holds.py and compliance/retention.py."""

    def __init__(self, actions: AdminActions, holds: LegalHolds, retention: Retention) -> None:
        self.actions = actions
        self.holds = holds
        self.retention = retention

    async def _hold_call(self, call: Any) -> Any:
        try:
            return await call
        except HoldError as exc:
            raise ActionRefused(_STATUS[exc.problem], str(exc), "subject" if exc.problem == "invalid" else None) from None

    async def list_holds(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.actions.check(who, roles.RETENTION, host)
        return [h.to_json() for h in await self._hold_call(self.holds.list(host))]

    async def create_hold(self, who: Principal, host: str, kind: str, subject: str, reason: str) -> dict[str, Any]:
        self.actions.check(who, roles.RETENTION, host)
        hold = await self._hold_call(self.holds.create(host, kind, subject, reason=reason, actor=who.actor))
        return hold.to_json()

    async def release_hold(self, who: Principal, host: str, hold_id: str) -> dict[str, Any]:
        self.actions.check(who, roles.RETENTION, host)
        return (await self._hold_call(self.holds.release(host, hold_id, actor=who.actor))).to_json()

    async def policy(self, who: Principal, host: str) -> dict[str, Any]:
        self.actions.check(who, roles.RETENTION, host)
        holds = await self._hold_call(self.holds.list(host))
        return {"host": host, **self.retention.policy(host).describe(), "holds": len(holds)}

    async def purge(self, who: Principal, host: str, dry_run: bool) -> dict[str, Any]:
        self.actions.check(who, roles.RETENTION, host)
        try:
            report = await self.retention.purge(host, dry_run=dry_run, actor=who.actor)
        except (HoldError, RetentionError) as exc:
            raise ActionRefused(409, f"the purge did not run: {exc}") from None
        return report.to_json()


def add_routes(app: Any, actions: AdminActions, who_dependency: Any) -> None:
    """Add the hold and retention routes to the API application (admin/api.py)."""
    admin: RetentionAdmin | None = getattr(actions, "retention", None)
    if admin is None:
        return
    host_param = Path(min_length=1, max_length=1023, description="a served domain (tenant)")

    @app.get("/hosts/{host}/holds", response_model=HoldList, summary="Legal holds in force on a host")
    async def list_holds(host: str = host_param, who: Principal = who_dependency) -> Any:
        return {"holds": await admin.list_holds(who, host)}

    @app.post("/hosts/{host}/holds", response_model=HoldOut, status_code=201,
              summary="Hold a user or a group: retention purges nothing of theirs until released")
    async def create_hold(body: NewHold, host: str = host_param, who: Principal = who_dependency) -> Any:
        return await admin.create_hold(who, host, body.kind, body.subject, body.reason)

    @app.delete("/hosts/{host}/holds/{hold_id}", response_model=Released, summary="Release a legal hold")
    async def release_hold(host: str = host_param, hold_id: str = Path(min_length=1, max_length=64),
                           who: Principal = who_dependency) -> Any:
        hold = await admin.release_hold(who, host, hold_id)
        return {"done": f"released hold {hold_id}", "hold": hold}

    @app.get("/hosts/{host}/retention", response_model=RetentionPolicy, summary="The retention policy in force")
    async def policy(host: str = host_param, who: Principal = who_dependency) -> Any:
        return await admin.policy(who, host)

    @app.post("/hosts/{host}/retention", response_model=PurgeOut,
              summary="Run a retention purge of the host now (audited as retention.purge)")
    async def purge(host: str = host_param, dry_run: bool = Query(False, description="count, delete nothing"),
                    who: Principal = who_dependency) -> Any:
        return await admin.purge(who, host, dry_run)
