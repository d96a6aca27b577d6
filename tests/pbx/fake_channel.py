"""The identity and clock of the scripted fake channels the service tests drive (each test
module's fake adds the keys, prompts and transfers its service needs)."""

from __future__ import annotations


class ChannelBase:
    """Who is calling whom, and a fake clock that starts at 0 (``wall0`` in wall time)."""

    def __init__(
        self,
        *,
        call_id: str = "call-1",
        caller: str = "0612345678",
        callee: str = "100",
        tenant_id: int = 1,
        wall0: float = 1_900_000_000.0,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.tenant_id = tenant_id
        self.wall0 = wall0
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall0 + self.t
