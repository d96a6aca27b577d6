"""Auto attendant (IVR) menus of a tenant: records, field checks, the repository, and the
loader that builds the engine's :class:`~minipbx.pbx.ivr.IvrMenu` objects.

A menu and its keys are one document: :meth:`SqlIvrRepo.add` and :meth:`SqlIvrRepo.update`
take the options as a list (an update given ``options`` replaces them all). Every write is
checked three ways before anything is stored, and the error names the field
(:class:`IvrInputError`, ``loc`` like ``("options", 2, "target")``):

1. each field by its check (:data:`IVR_MENU_CHECKS`, :data:`IVR_OPTION_CHECKS`);
2. the menu as the engine builds it (bounds, targets, hours, greeting prompts);
3. the menu among the tenant's other menus (:func:`~minipbx.pbx.ivr.menu_problems`):
   the menus it names exist, and no ``after_hours``/``timeout_action`` chain cycles.

A menu that others name (another menu's key, timeout or after-hours menu, or a dial plan
rule with target ``ivr:<name>``) cannot be removed or renamed: :class:`ConflictError`
names the referrers. Every write bumps ``dial_plans_version``, the counter the routing
loader already polls, so the running PBX reloads the menus with the routing data
(:meth:`SqlIvrRepo.load_all_menus`).

The store builds the pure engine dataclasses here (an upward import of a module with no
I/O): the menus the PBX runs are exactly the ones the checks accepted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.pbx import ivr as engine
from minipbx.store.checks import LABEL, Check, choice, flag, integer, invalid, text, validate
from minipbx.store.coltypes import utcnow
from minipbx.store.crud import DbRepo, bump_all, flush_unique, get_row
from minipbx.store.errors import ConflictError, InvalidInputError
from minipbx.store.models import (
    DIAL_PLANS_VERSION,
    LABEL_LEN,
    PROMPT_NAME_LEN,
    DialPlan,
    DialPlanRule,
    Tenant,
)
from minipbx.store.models import IvrMenu as MenuRow
from minipbx.store.models import IvrOption as OptionRow

log = logging.getLogger(__name__)

ACTIONS = tuple(a.value for a in engine.IvrActionKind)
TIMEOUT_ACTIONS = tuple(a for a in ACTIONS if a != "repeat")
KEY_ORDER = "1234567890*#"  # as on a keypad
_KEY = re.compile(r"[0-9*#]")
_SPLIT = re.compile(r"[\s,]+")
_LEADING_FIELD = re.compile(r"(?:invalid |unknown field ')?([a-z_]+)")

Loc = tuple[str | int, ...]


class IvrInputError(InvalidInputError):
    """A bad menu: ``loc`` is the field at fault (``("timeout_seconds",)``,
    ``("options", 2, "target")``), the message says why."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


# --- records and checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IvrOptionRecord:
    """One key of a menu: ``action`` (see :data:`ACTIONS`) and its ``target``."""

    key: str
    action: str
    target: str = ""


@dataclass(frozen=True, slots=True)
class IvrMenuRecord:
    """A stored menu with its options (keypad order)."""

    id: int
    tenant_id: int
    name: str
    greeting: tuple[str, ...]
    dial_by_extension: bool
    max_digits: int
    timeout_seconds: float
    digit_timeout_seconds: float
    retries: int
    invalid_prompt: str
    timeout_action: str
    timeout_target: str
    hours: str
    after_hours_menu: str | None
    options: tuple[IvrOptionRecord, ...]
    created_at: datetime
    updated_at: datetime


def _seconds(low: float, high: float) -> Check:
    """A number of seconds in ``[low, high]`` (int, float or decimal text)."""

    def check(field: str, value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise invalid(field, f"expected a number of seconds, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(field, f"expected a number of seconds, got {value!r}")
        if not low <= value <= high:
            raise invalid(field, f"{value:g} is not between {low:g} and {high:g} seconds")
        return float(value)

    return check


def _prompts(field: str, value: Any) -> tuple[str, ...]:
    """Prompt names: a list, or text separated by commas or spaces."""
    if isinstance(value, str):
        items = [p for p in _SPLIT.split(value.strip()) if p]
    elif isinstance(value, list | tuple) and all(isinstance(p, str) for p in value):
        items = [p.strip() for p in value]
    else:
        raise invalid(field, "expected a list of prompt names")
    if not items:
        raise invalid(field, "a menu needs at least one prompt")
    if len(items) > engine.MAX_GREETING:
        raise invalid(field, f"at most {engine.MAX_GREETING} prompts")
    for item in items:
        if not engine.PROMPT_NAME.fullmatch(item):
            raise invalid(field, f"{item!r} is not a prompt name (a-z first, then a-z 0-9 _)")
    return tuple(items)


_PROMPT = text(
    PROMPT_NAME_LEN, required=True, pattern=engine.PROMPT_NAME, hint="a-z first, then a-z 0-9 _"
)

IVR_MENU_CHECKS: dict[str, Check] = {
    "name": text(LABEL_LEN, required=True, pattern=LABEL, hint="letters, digits, . _ @ + -"),
    "greeting": _prompts,
    "dial_by_extension": flag(),
    "max_digits": integer(*engine.MAX_DIGITS_RANGE),
    "timeout_seconds": _seconds(*engine.TIMEOUT_RANGE),
    "digit_timeout_seconds": _seconds(*engine.DIGIT_TIMEOUT_RANGE),
    "retries": integer(*engine.RETRIES_RANGE),
    "invalid_prompt": _PROMPT,
    "timeout_action": choice(*TIMEOUT_ACTIONS),
    "timeout_target": text(255),
    "hours": text(1000),
    "after_hours_menu": text(LABEL_LEN, nullable=True, pattern=LABEL, hint="a menu name"),
}
IVR_OPTION_CHECKS: dict[str, Check] = {
    "key": text(1, required=True, pattern=_KEY, hint="0-9 * #"),
    "action": choice(*ACTIONS),
    "target": text(255),
}
#: The values of the fields a new menu leaves out (``greeting`` has none: it is required).
IVR_DEFAULTS: dict[str, Any] = {
    "dial_by_extension": False,
    "max_digits": 4,
    "timeout_seconds": 5.0,
    "digit_timeout_seconds": 3.0,
    "retries": 2,
    "invalid_prompt": engine.INVALID_OPTION,
    "timeout_action": "hangup",
    "timeout_target": "",
    "hours": "",
    "after_hours_menu": None,
}
# Engine field -> stored field, for error locations.
_FIELD_OF = {
    "timeout": "timeout_seconds",
    "digit_timeout": "digit_timeout_seconds",
    "after_hours": "after_hours_menu",
}


def _located(error: engine.IvrError | InvalidInputError, prefix: Loc = ()) -> IvrInputError:
    """A store or engine error as an :class:`IvrInputError` (its leading word: the field)."""
    message = str(error)
    found = _LEADING_FIELD.match(message)
    field = found.group(1) if found else "_"
    loc = (*prefix, _FIELD_OF.get(field, field))
    if isinstance(error, engine.IvrError):
        message = f"invalid {loc[-1]}: {message.partition(':')[2].strip()}"
    if prefix:
        message = f"option {int(prefix[1]) + 1}: {message}"
    return IvrInputError(loc, message)


def check_fields(given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` menu fields checked (IvrInputError names the field)."""
    try:
        return validate(IVR_MENU_CHECKS, given)
    except IvrInputError:
        raise
    except InvalidInputError as exc:
        raise _located(exc) from None


def check_options(given: Sequence[Mapping[str, Any] | IvrOptionRecord]) -> list[IvrOptionRecord]:
    """The options checked one by one (errors name ``options.<index>.<field>``), each a
    usable engine option, no key twice; in the order given."""
    checked: list[IvrOptionRecord] = []
    seen: set[str] = set()
    for index, item in enumerate(given):
        raw = (
            item
            if isinstance(item, Mapping)
            else {f.name: getattr(item, f.name) for f in fields(item)}
        )
        where: Loc = ("options", index)
        try:
            values = validate(IVR_OPTION_CHECKS, {"key": "", "action": "", "target": "", **raw})
            option = IvrOptionRecord(**values)
            engine.IvrOption(option.key, engine.IvrActionKind(option.action), option.target)
        except (InvalidInputError, engine.IvrError) as exc:
            raise _located(exc, where) from None
        if option.key in seen:
            message = f"option {index + 1}: invalid key: {option.key!r} is given twice"
            raise IvrInputError((*where, "key"), message)
        seen.add(option.key)
        checked.append(option)
    return checked  # in the order given: error locations index it (records sort by key)


def build_menu(values: Mapping[str, Any], options: Sequence[IvrOptionRecord]) -> engine.IvrMenu:
    """The engine's menu from checked stored values (IvrInputError names a field)."""
    try:
        return engine.IvrMenu(
            name=values["name"],
            greeting=tuple(values["greeting"]),
            options={
                o.key: engine.IvrOption(o.key, engine.IvrActionKind(o.action), o.target)
                for o in options
            },
            dial_by_extension=values["dial_by_extension"],
            max_digits=values["max_digits"],
            timeout=values["timeout_seconds"],
            digit_timeout=values["digit_timeout_seconds"],
            retries=values["retries"],
            invalid_prompt=values["invalid_prompt"],
            timeout_action=engine.parse_action(values["timeout_action"], "timeout_action"),
            timeout_target=values["timeout_target"],
            hours=engine.parse_hours(values["hours"]),
            after_hours=values["after_hours_menu"] or None,
        )
    except engine.IvrError as exc:
        raise _located(exc) from None


def _row_values(row: MenuRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in ("name", *IVR_DEFAULTS)}
    values["greeting"] = tuple(p for p in row.greeting.split(",") if p)
    return values


def _record(row: MenuRow, options: Sequence[OptionRow]) -> IvrMenuRecord:
    values = _row_values(row)
    opts = sorted(
        (IvrOptionRecord(o.key, o.action, o.target) for o in options),
        key=lambda o: KEY_ORDER.index(o.key) if o.key in KEY_ORDER else len(KEY_ORDER),
    )
    return IvrMenuRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        options=tuple(opts),
        created_at=row.created_at,
        updated_at=row.updated_at,
        **values,
    )


def _problem_loc(problem: engine.IvrProblem, options: Sequence[IvrOptionRecord]) -> Loc:
    if problem.key is not None:
        index = next(i for i, o in enumerate(options) if o.key == problem.key)
        return ("options", index, "target")
    return (_FIELD_OF.get(problem.field, problem.field),)


def service_target(name: str) -> str:
    """The dial plan rule target that routes calls to menu ``name`` (``ivr:<name>``)."""
    return engine.TARGET_PREFIX + name


# --- the repository --------------------------------------------------------------------------


class SqlIvrRepo(DbRepo):
    """Auto attendant menus with their options; one transaction a call (see module doc)."""

    async def _menus(
        self, session: AsyncSession, *where: Any
    ) -> list[tuple[MenuRow, list[OptionRow]]]:
        """Menus matching ``where`` with their options, by tenant then name."""
        stmt = select(MenuRow).where(*where).order_by(MenuRow.tenant_id, MenuRow.name)
        rows = list(await session.scalars(stmt))
        options: dict[int, list[OptionRow]] = {row.id: [] for row in rows}
        if rows:
            found = select(OptionRow).where(OptionRow.menu_id.in_(list(options)))
            for option in await session.scalars(found):
                options[option.menu_id].append(option)
        return [(row, options[row.id]) for row in rows]

    async def _built(self, session: AsyncSession, tenant_id: int) -> dict[str, engine.IvrMenu]:
        """The tenant's stored menus as the engine's (a menu that does not build is logged
        and left out)."""
        built: dict[str, engine.IvrMenu] = {}
        for row, options in await self._menus(session, MenuRow.tenant_id == tenant_id):
            try:
                opts = [IvrOptionRecord(o.key, o.action, o.target) for o in options]
                built[row.name] = build_menu(_row_values(row), opts)
            except (InvalidInputError, ValueError) as exc:
                log.error(
                    "event=ivr_menu_unusable tenant_id=%s menu=%s error=%s",
                    tenant_id,
                    row.name,
                    exc,
                )
        return built

    async def _check_among(
        self,
        session: AsyncSession,
        tenant_id: int,
        menu: engine.IvrMenu,
        options: Sequence[IvrOptionRecord],
        replacing: str | None,
    ) -> None:
        """``menu`` must fit the tenant's other menus (it replaces ``replacing``)."""
        menus = await self._built(session, tenant_id)
        menus.pop(replacing or menu.name, None)
        menus[menu.name] = menu
        for problem in engine.menu_problems(menus):
            if problem.menu == menu.name:
                loc = _problem_loc(problem, options)
                message = f"invalid {loc[-1]}: {problem.message}"
                if len(loc) == 3:
                    message = f"option {int(loc[1]) + 1}: {message}"
                raise IvrInputError(loc, message)

    async def referrers(self, tenant_id: int, name: str) -> list[str]:
        """What names menu ``name`` of a tenant: other menus and dial plan rules."""
        async with self._db.read("find IVR menu referrers") as session:
            return await self._referrers(session, tenant_id, name)

    async def _referrers(self, session: AsyncSession, tenant_id: int, name: str) -> list[str]:
        found: list[str] = []
        for row, options in await self._menus(session, MenuRow.tenant_id == tenant_id):
            if row.name == name:
                continue
            keys = [o.key for o in options if o.action == "menu" and o.target == name]
            found += [f"menu {row.name!r} (key {key})" for key in keys]
            if row.timeout_action == "menu" and row.timeout_target == name:
                found.append(f"menu {row.name!r} (timeout action)")
            if row.after_hours_menu == name:
                found.append(f"menu {row.name!r} (after-hours menu)")
        target = service_target(name)
        stmt = (
            select(DialPlan.name, DialPlanRule.position)
            .join(DialPlan, DialPlan.id == DialPlanRule.dial_plan_id)
            .where(
                DialPlan.tenant_id == tenant_id,
                or_(DialPlanRule.target == target, DialPlanRule.failover_target == target),
            )
            .order_by(DialPlan.name, DialPlanRule.position)
        )
        for plan, position in (await session.execute(stmt)).all():
            found.append(f"dial plan {plan!r} rule {position} ({target})")
        return found

    async def _refuse_if_used(
        self, session: AsyncSession, tenant_id: int, name: str, doing: str
    ) -> None:
        users = await self._referrers(session, tenant_id, name)
        if users:
            raise ConflictError(
                f"cannot {doing} IVR menu {name!r}: it is used by {', '.join(users)}"
            )

    async def _write(
        self,
        session: AsyncSession,
        row: MenuRow,
        values: Mapping[str, Any],
        options: Sequence[IvrOptionRecord] | None,
    ) -> IvrMenuRecord:
        """Set ``values`` (and the options, when given) on ``row``; flush; bump."""
        for name, value in values.items():
            setattr(row, name, ",".join(value) if name == "greeting" else value)
        row.updated_at = utcnow()
        conflict = f"IVR menu {row.name!r} already exists in tenant {row.tenant_id}"
        await flush_unique(session, conflict)
        if options is not None:
            for old in await session.scalars(select(OptionRow).where(OptionRow.menu_id == row.id)):
                await session.delete(old)
            await session.flush()
            session.add_all(
                OptionRow(menu_id=row.id, key=o.key, action=o.action, target=o.target)
                for o in options
            )
            await session.flush()
        stored = await session.scalars(select(OptionRow).where(OptionRow.menu_id == row.id))
        record = _record(row, list(stored))
        await bump_all(session, (DIAL_PLANS_VERSION,))
        return record

    async def add(
        self,
        tenant_id: int,
        name: str,
        *,
        options: Sequence[Mapping[str, Any] | IvrOptionRecord] = (),
        **fields: Any,
    ) -> IvrMenuRecord:
        """Create menu ``name`` in a tenant; ``greeting`` is required, the other fields
        default (:data:`IVR_DEFAULTS`). IvrInputError names a bad field, NotFoundError an
        unknown tenant, ConflictError a name already used in the tenant."""
        values = {**IVR_DEFAULTS, **check_fields({"name": name, **fields})}
        if "greeting" not in values:
            raise IvrInputError(("greeting",), "invalid greeting: a menu needs at least one prompt")
        checked = check_options(options)
        menu = build_menu(values, checked)
        async with self._db.write("add IVR menu") as session:
            await get_row(session, Tenant, tenant_id, "tenant")
            await self._check_among(session, tenant_id, menu, checked, None)
            row = MenuRow(tenant_id=tenant_id, created_at=utcnow())
            session.add(row)
            record = await self._write(session, row, values, checked)
        log.info("store.ivr_menu_added tenant_id=%s id=%s name=%s", tenant_id, row.id, name)
        return record

    async def update(
        self,
        menu_id: int,
        *,
        options: Sequence[Mapping[str, Any] | IvrOptionRecord] | None = None,
        **fields: Any,
    ) -> IvrMenuRecord:
        """Change the ``fields`` given; ``options`` given replace all the menu's options.
        A menu that others name cannot be renamed (ConflictError names them)."""
        given = check_fields(fields)
        checked = None if options is None else check_options(options)
        async with self._db.write("update IVR menu") as session:
            row = await get_row(session, MenuRow, menu_id, "IVR menu")
            old_name = row.name
            current = [
                IvrOptionRecord(o.key, o.action, o.target)
                for o in await session.scalars(select(OptionRow).where(OptionRow.menu_id == row.id))
            ]
            values = {**_row_values(row), **given}
            menu = build_menu(values, current if checked is None else checked)
            if values["name"] != old_name:
                await self._refuse_if_used(session, row.tenant_id, old_name, "rename")
            opts = current if checked is None else checked
            await self._check_among(session, row.tenant_id, menu, opts, old_name)
            record = await self._write(session, row, given, checked)
        log.info(
            "store.ivr_menu_updated id=%s fields=%s options=%s",
            menu_id,
            ",".join(given),
            "replaced" if checked is not None else "kept",
        )
        return record

    async def replace(
        self,
        menu_id: int,
        *,
        options: Sequence[Mapping[str, Any] | IvrOptionRecord] = (),
        **fields: Any,
    ) -> IvrMenuRecord:
        """Make the menu exactly the document given: fields left out take their defaults,
        options left out are removed (``greeting`` is required, ``name`` kept if absent)."""
        if "greeting" not in fields:
            raise IvrInputError(("greeting",), "invalid greeting: a menu needs at least one prompt")
        return await self.update(menu_id, options=options, **{**IVR_DEFAULTS, **fields})

    async def get(self, menu_id: int) -> IvrMenuRecord:
        """The menu with this id; NotFoundError if there is none."""
        async with self._db.read("get IVR menu") as session:
            row = await get_row(session, MenuRow, menu_id, "IVR menu")
            found = await self._menus(session, MenuRow.id == row.id)
            return _record(*found[0])

    async def find(self, tenant_id: int, name: str) -> IvrMenuRecord | None:
        """Menu ``name`` of a tenant, or None."""
        async with self._db.read("find IVR menu") as session:
            where = (MenuRow.tenant_id == tenant_id, MenuRow.name == name.strip())
            found = await self._menus(session, *where)
            return _record(*found[0]) if found else None

    async def list_by_tenant(self, tenant_id: int | None = None) -> list[IvrMenuRecord]:
        """The menus of one tenant (every tenant's when None), by tenant then name."""
        async with self._db.read("list IVR menus") as session:
            where = () if tenant_id is None else (MenuRow.tenant_id == tenant_id,)
            return [_record(row, opts) for row, opts in await self._menus(session, *where)]

    async def remove(self, menu_id: int) -> None:
        """Delete a menu and its options. ConflictError naming the referrers when another
        menu or a dial plan rule names it; NotFoundError if there is no such menu."""
        async with self._db.write("remove IVR menu") as session:
            row = await get_row(session, MenuRow, menu_id, "IVR menu")
            await self._refuse_if_used(session, row.tenant_id, row.name, "remove")
            await session.delete(row)
            await session.flush()
            await bump_all(session, (DIAL_PLANS_VERSION,))
        log.info("store.ivr_menu_removed id=%s", menu_id)

    async def check_service_target(self, tenant_id: int, target: str) -> None:
        """For dial plan rules: a service target ``ivr:<name>`` must name a menu of the
        tenant (InvalidInputError on ``target``); other targets pass."""
        name = engine.menu_of_target(target)
        if target.startswith(engine.TARGET_PREFIX) and name is None:
            raise invalid("target", "ivr: needs a menu name (ivr:<menu>)")
        if name is not None and await self.find(tenant_id, name) is None:
            raise invalid("target", f"no IVR menu {name!r} in tenant {tenant_id}")

    async def load_menus(self, tenant_id: int) -> dict[str, engine.IvrMenu]:
        """The tenant's menus, built for :func:`~minipbx.pbx.ivr.run_ivr`, by name.

        Data checked when written always builds; a menu that does not (say its time zone
        vanished from the system) is logged and left out, and problems between menus are
        logged (the engine hangs up a call that reaches a missing menu)."""
        async with self._db.read("load IVR menus") as session:
            menus = await self._built(session, tenant_id)
        for problem in engine.validate_menus(menus):
            log.error("event=ivr_menu_problem tenant_id=%s problem=%r", tenant_id, problem)
        return menus

    async def load_all_menus(self) -> dict[int, dict[str, engine.IvrMenu]]:
        """Every tenant's menus (tenant id -> name -> menu), in one transaction: what the
        PBX reloads when ``dial_plans_version`` moves."""
        async with self._db.read("load IVR menus") as session:
            tenants = list(await session.scalars(select(MenuRow.tenant_id).distinct()))
            found = {tenant_id: await self._built(session, tenant_id) for tenant_id in tenants}
        for tenant_id, menus in found.items():
            for problem in engine.validate_menus(menus):
                log.error("event=ivr_menu_problem tenant_id=%s problem=%r", tenant_id, problem)
        return found


__all__ = [
    "ACTIONS",
    "IVR_DEFAULTS",
    "IVR_MENU_CHECKS",
    "IVR_OPTION_CHECKS",
    "TIMEOUT_ACTIONS",
    "IvrInputError",
    "IvrMenuRecord",
    "IvrOptionRecord",
    "SqlIvrRepo",
    "build_menu",
    "check_fields",
    "check_options",
    "service_target",
]
