"""Alembic environment for minipbx (no alembic.ini needed).

At run time :meth:`minipbx.store.db.Database.upgrade` hands an open connection in
``config.attributes["connection"]``, already inside the transaction (and lock) it manages.
For offline SQL generation (``alembic upgrade head --sql``, e.g. for a DBA), set
``sqlalchemy.url`` on the config instead; see :func:`minipbx.store.db.alembic_config`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from minipbx.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Write the migration SQL for ``sqlalchemy.url`` instead of running it."""
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need sqlalchemy.url")
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        target_metadata=target_metadata,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection handed over by the caller."""
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "minipbx migrations run through minipbx.store.db.Database.upgrade(), "
            "which passes a connection in config.attributes['connection']"
        )
    # SQLite cannot ALTER most things: its migrations use batch mode (copy and move).
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
