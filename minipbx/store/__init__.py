"""Storage: SQLAlchemy 2 (async) models, repositories, migrations and memory caches.

Typical start-up::

    db = Database.for_data_dir(data_dir, url)   # URL checked here, no I/O
    await db.upgrade()                           # open + migrate (StoreError on failure)
    tenants, users = SqlTenantRepo(db), SqlUserRepo(db)
    await tenants.ensure_default()
    directory = UserDirectory.for_database(db)
    await directory.load()                       # then refresh_if_changed() every second
"""

from minipbx.store.db import Database, default_url, head_revision, parse_url
from minipbx.store.directory import (
    DirectorySnapshot,
    DirectorySource,
    SqlDirectorySource,
    StaticDirectorySource,
    UserDirectory,
)
from minipbx.store.errors import (
    ConflictError,
    CsvImportError,
    ImportProblem,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from minipbx.store.records import (
    DEFAULT_DOMAIN,
    DEFAULT_REALM,
    Credentials,
    RegistrationRecord,
    TenantRecord,
    UserRecord,
)
from minipbx.store.repos import (
    ImportResult,
    RegistrationRepo,
    SqlRegistrationRepo,
    SqlTenantRepo,
    SqlUserRepo,
    TenantRepo,
    UserRepo,
)

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_REALM",
    "ConflictError",
    "Credentials",
    "CsvImportError",
    "Database",
    "DirectorySnapshot",
    "DirectorySource",
    "ImportProblem",
    "ImportResult",
    "InvalidInputError",
    "NotFoundError",
    "RegistrationRecord",
    "RegistrationRepo",
    "SqlDirectorySource",
    "SqlRegistrationRepo",
    "SqlTenantRepo",
    "SqlUserRepo",
    "StaticDirectorySource",
    "StoreError",
    "TenantRecord",
    "TenantRepo",
    "UserDirectory",
    "UserRecord",
    "UserRepo",
    "default_url",
    "head_revision",
    "parse_url",
]
