"""Threat-protection policy and quarantine review in the admin API.

    GET    /hosts/{host}/policy                            the policy in force, and where it comes from
    PUT    /hosts/{host}/policy                            replace it: a JSON object shaped like [hosts.policy]
    DELETE /hosts/{host}/policy                            drop the runtime policy: the configured one applies
    GET    /hosts/{host}/quarantine                        messages a policy held for review
    POST   /hosts/{host}/quarantine/{item}/release         deliver one now (with a delay stamp)
    POST   /hosts/{host}/quarantine/{item}/reject          drop one; its sender is told
    GET    /hosts/{host}/quarantine/files                  uploaded files a policy held
    POST   /hosts/{host}/quarantine/files/{id}/release     make one downloadable (never a malware finding: 409)
    POST   /hosts/{host}/quarantine/files/{id}/delete      remove its bytes and its record

The policy routes need `policy.read` / `policy.write` (tenant admins of the host and the
operator; compliance officers read); a PUT is checked like the configuration file and refused
with 422 naming the bad key (`field`, e.g. policy.dlp.rules) and why. The quarantine routes need
`quarantine.review`, which only the compliance role has: held messages are what people wrote.
Changes are audited by the services (policy.change, quarantine.release, quarantine.reject,
quarantine.file.release, quarantine.file.delete). The file routes need `quarantine.review` too:
a held file is what someone sent (policy/file_quarantine.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import Body, Path
from pydantic import BaseModel, Field

from ..policy.engine import PolicyError, policy_to_json
from ..policy.quarantine import QuarantineError
from . import roles
from .actions import ActionRefused

if TYPE_CHECKING:
    from ..policy.engine import PolicyEngine
    from ..policy.file_quarantine import FileQuarantine
    from ..policy.quarantine import QuarantineService
    from .actions import AdminActions
    from .identities import Principal


class HostPolicy(BaseModel):
    host: str
    source: Literal["override", "configuration", "default"] = Field(
        description="override: set through this API; configuration: [hosts.policy]; default: no policy")
    policy: dict[str, Any] = Field(description="the policy in force, shaped like [hosts.policy] (see docs/policy.md)")
    configured: dict[str, Any] = Field(description="the policy of the configuration file")


class HeldMessage(BaseModel):
    id: str
    ts: float = Field(description="when it was sent (unix time)")
    sender: str
    to: str
    rule: str
    reason: str
    body: str
    subject: str


class HeldMessages(BaseModel):
    messages: list[HeldMessage]


class Reviewed(BaseModel):
    done: str
    id: str


class HeldFile(BaseModel):
    id: str
    uploader: str
    filename: str
    size: int
    content_type: str = Field(description="the type the uploader sent it as")
    rule: str = Field(description="the rule that held it: \"malware\" (never released) or a type/size rule")
    signature: str = Field(description="what the malware scanner found, if it did")
    reason: str
    ts: float = Field(description="when it was uploaded (unix time)")


class HeldFiles(BaseModel):
    files: list[HeldFile]


NO_UPLOADS = "HTTP file upload is off on this server ([modules.upload] needs http.enabled), so no file is held"


class PolicyAdmin:
    """The checked, audited admin side of policy/engine.py and policy/quarantine.py."""

    def __init__(self, actions: AdminActions, engine: PolicyEngine, quarantine: QuarantineService,
                 files: FileQuarantine | None = None) -> None:
        self.actions = actions
        self.engine = engine
        self.quarantine = quarantine
        self.files = files              # None: file upload is off

    def _answer(self, host: str) -> dict[str, Any]:
        return {"host": host, "source": self.engine.source(host), "policy": policy_to_json(self.engine.get(host)),
                "configured": policy_to_json(self.engine.configured(host))}

    def get(self, who: Principal, host: str) -> dict[str, Any]:
        self.actions.check(who, roles.POLICY_READ, host)
        return self._answer(host)

    async def set(self, who: Principal, host: str, document: Any) -> dict[str, Any]:
        self.actions.check(who, roles.POLICY_WRITE, host)
        detail = _token(who)
        try:
            await self.engine.set(host, document, actor=who.actor, **detail)
        except PolicyError as exc:
            raise ActionRefused(422, f"the policy was not changed: {exc.reason}", exc.field or None) from None
        await self.actions.live.changed("policy")
        return self._answer(host)

    async def reset(self, who: Principal, host: str) -> dict[str, Any]:
        self.actions.check(who, roles.POLICY_WRITE, host)
        detail = _token(who)
        await self.engine.reset(host, actor=who.actor, **detail)
        await self.actions.live.changed("policy")
        return self._answer(host)

    async def held(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.actions.check(who, roles.QUARANTINE_REVIEW, host)
        return await self.quarantine.list(host)

    async def review(self, who: Principal, host: str, item_id: str, decision: str) -> dict[str, Any]:
        self.actions.check(who, roles.QUARANTINE_REVIEW, host)
        await _decide(self.quarantine.release if decision == "release" else self.quarantine.reject,
                      who, host, item_id)
        done = "released: delivered to its recipient" if decision == "release" else "rejected: its sender was told"
        return {"done": done, "id": item_id}

    async def held_files(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.actions.check(who, roles.QUARANTINE_REVIEW, host)
        if self.files is None:
            raise ActionRefused(404, NO_UPLOADS)
        return await self.files.list(host)

    async def review_file(self, who: Principal, host: str, file_id: str, decision: str) -> dict[str, Any]:
        self.actions.check(who, roles.QUARANTINE_REVIEW, host)
        if self.files is None:
            raise ActionRefused(404, NO_UPLOADS)
        await _decide(self.files.release if decision == "release" else self.files.delete, who, host, file_id)
        done = ("released: it can be downloaded from its address" if decision == "release"
                else "deleted: its bytes and its record are gone")
        return {"done": done, "id": file_id}


def _token(who: Principal) -> dict[str, str]:
    """The audit detail naming the API token an action came through, if any."""
    return {"token": who.token_id} if who.token_id else {}


async def _decide(act: Any, who: Principal, host: str, item_id: str) -> None:
    """Run a quarantine review decision (release, reject, delete) as `who`, audited under its token."""
    try:
        await act(host, item_id, actor=who.actor, **_token(who))
    except QuarantineError as exc:
        raise ActionRefused(exc.status, str(exc)) from None


def add_routes(app: Any, actions: AdminActions, who_dependency: Any) -> None:
    """Add the policy and quarantine routes to the API application (admin/api.py)."""
    admin: PolicyAdmin | None = getattr(actions, "policy", None)
    if admin is None:
        return
    host_param = Path(min_length=1, max_length=1023, description="a served domain (tenant)")
    item_param = Path(min_length=1, max_length=64, description="a held message's id (from the list)")

    @app.get("/hosts/{host}/policy", response_model=HostPolicy, summary="The threat-protection policy in force")
    async def get_policy(host: str = host_param, who: Principal = who_dependency) -> Any:
        return admin.get(who, host)

    @app.put("/hosts/{host}/policy", response_model=HostPolicy,
             summary="Replace the host's policy at runtime (until DELETE); audited as policy.change")
    async def set_policy(document: dict[str, Any] = Body(description="shaped like [hosts.policy]: "
                                                                    "{\"dlp\": {\"rules\": [...]}, \"links\": {...}}"),
                         host: str = host_param, who: Principal = who_dependency) -> Any:
        return await admin.set(who, host, document)

    @app.delete("/hosts/{host}/policy", response_model=HostPolicy,
                summary="Drop the runtime policy: the configured one (returned) applies again")
    async def reset_policy(host: str = host_param, who: Principal = who_dependency) -> Any:
        return await admin.reset(who, host)

    @app.get("/hosts/{host}/quarantine", response_model=HeldMessages, summary="Messages held for review")
    async def held(host: str = host_param, who: Principal = who_dependency) -> Any:
        return {"messages": await admin.held(who, host)}

    @app.post("/hosts/{host}/quarantine/{item}/release", response_model=Reviewed,
              summary="Deliver a held message now, stamped with when it was sent")
    async def release(host: str = host_param, item: str = item_param, who: Principal = who_dependency) -> Any:
        return await admin.review(who, host, item, "release")

    @app.post("/hosts/{host}/quarantine/{item}/reject", response_model=Reviewed,
              summary="Drop a held message; its sender is told it was not delivered")
    async def reject(host: str = host_param, item: str = item_param, who: Principal = who_dependency) -> Any:
        return await admin.review(who, host, item, "reject")

    from .api import ErrorBody
    file_param = Path(min_length=1, max_length=128, description="a quarantined file's id (from the list)")

    @app.get("/hosts/{host}/quarantine/files", response_model=HeldFiles, summary="Uploaded files held for review")
    async def held_files(host: str = host_param, who: Principal = who_dependency) -> Any:
        return {"files": await admin.held_files(who, host)}

    @app.post("/hosts/{host}/quarantine/files/{file_id}/release", response_model=Reviewed,
              responses={409: {"model": ErrorBody, "description": "the malware scanner found something in it: it "
                                                                  "can only be deleted"},
                         503: {"model": ErrorBody, "description": "the scanner or the compliance journal cannot "
                                                                  "answer: it stays held"}},
              summary="Make a file held by a type or size rule downloadable (scanned first); never malware")
    async def release_file(host: str = host_param, file_id: str = file_param, who: Principal = who_dependency) -> Any:
        return await admin.review_file(who, host, file_id, "release")

    @app.post("/hosts/{host}/quarantine/files/{file_id}/delete", response_model=Reviewed,
              responses={503: {"model": ErrorBody, "description": "the stored file could not be deleted; it is "
                                                                  "never served"}},
              summary="Delete a held file: its stored bytes and its record")
    async def delete_file(host: str = host_param, file_id: str = file_param, who: Principal = who_dependency) -> Any:
        return await admin.review_file(who, host, file_id, "delete")
