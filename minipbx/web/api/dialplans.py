"""Dial plans and their ordered rules.

Rules are replaced as a whole (``PUT /dial-plans/{id}/rules``), each checked by the store's
field checks and then compiled as the router will compile it
(:func:`minipbx.pbx.dialplan.make_rule`), so a rule the router could not use is refused
with 422 naming the rule's index and field (``["body", "rules", 2, "time_condition"]``).
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

from fastapi import APIRouter

from minipbx.pbx.dialplan import DialPlanError, Pattern, TimeCondition, make_rule
from minipbx.store import InvalidInputError
from minipbx.store.checks import validate
from minipbx.store.pbxrecords import (
    DIAL_PLAN_CHECKS,
    RULE_CHECKS,
    DialPlanRecord,
    DialPlanRule,
)
from minipbx.web.api.crud import crud_router, named_resource, owned
from minipbx.web.api.schemas import (
    ApiModel,
    OutModel,
    RowId,
    crud_models,
    input_model,
    record_model,
)
from minipbx.web.auth import Admin, Ctx
from minipbx.web.errors import FieldError, field_of

RuleOut = record_model("DialPlanRule", DialPlanRule)
RuleIn = input_model(
    "DialPlanRuleIn",
    DialPlanRule,
    RULE_CHECKS,
    required=("pattern", "action"),
    doc="One rule (see docs/dialplan.md); the fields left out take their defaults.",
)
# make_rule's parameter names for the store's field names, and back for messages.
_TO_RULE = {"failover_target": "failover", "min_level": "level"}
_FROM_RULE = {"failover": "failover_target", "level": "min_level", "strip/prepend": "strip"}
_DEFAULTS = {f.name: f.default for f in dataclass_fields(DialPlanRule)}


class RulesIn(ApiModel):
    """The complete, ordered rule list of a plan."""

    rules: list[RuleIn]  # type: ignore[valid-type]


class RulesOut(OutModel):
    """A plan's rules, in order."""

    rules: list[RuleOut]  # type: ignore[valid-type]


def _rule_error(index: int, field: str, message: str) -> FieldError:
    return FieldError(("body", "rules", index, field), f"rule {index + 1}: {message}")


def check_rule(index: int, given: dict[str, Any]) -> DialPlanRule:
    """The rule at ``index`` checked as the store and the router will check it."""
    try:
        values = {**_DEFAULTS, **validate(RULE_CHECKS, given)}
    except InvalidInputError as exc:
        loc, message = field_of(str(exc))
        raise _rule_error(index, str(loc[-1]) if loc else "pattern", message) from None
    for field in ("pattern", "caller_pattern"):
        if values[field]:
            try:
                Pattern.parse(values[field])
            except DialPlanError as exc:
                raise _rule_error(index, field, str(exc)) from None
    if values["time_condition"]:
        try:
            TimeCondition.parse(values["time_condition"])
        except DialPlanError as exc:
            raise _rule_error(index, "time_condition", str(exc)) from None
    compiled = {_TO_RULE.get(name, name): values[name] for name in RULE_CHECKS}
    try:
        make_rule(position=index + 1, **compiled)
    except DialPlanError as exc:
        field = str(exc).partition(":")[0]
        raise _rule_error(index, _FROM_RULE.get(field, field), str(exc)) from None
    return DialPlanRule(**{name: values[name] for name in RULE_CHECKS})


DIAL_PLANS = named_resource(
    lambda ctx: ctx.dial_plans,
    what="dial plan",
    path="/dial-plans",
    tag="dial plans",
    models=crud_models("DialPlan", DialPlanRecord, DIAL_PLAN_CHECKS),
)
rules_router = APIRouter(prefix="/dial-plans", tags=["dial plans"])


@rules_router.get("/{row_id}/rules", response_model=RulesOut)
async def list_rules(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
    """The plan's rules in order."""
    await owned(ctx, principal, DIAL_PLANS, row_id)
    return {"rules": await ctx.dial_plans.list_rules(row_id)}


@rules_router.put("/{row_id}/rules", response_model=RulesOut)
async def replace_rules(ctx: Ctx, principal: Admin, row_id: RowId, body: RulesIn) -> Any:
    """Make ``rules`` the plan's complete rule list, in this order (atomically)."""
    await owned(ctx, principal, DIAL_PLANS, row_id)
    rules = [
        check_rule(i, rule.model_dump(exclude_unset=True))  # type: ignore[attr-defined]
        for i, rule in enumerate(body.rules)
    ]
    return {"rules": await ctx.dial_plans.replace_rules(row_id, rules)}


router = APIRouter()
router.include_router(rules_router)
router.include_router(crud_router(DIAL_PLANS))
