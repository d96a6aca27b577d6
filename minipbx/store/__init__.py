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
from minipbx.store.pbxrecords import (
    AdminRecord,
    ApiTokenRecord,
    CardRecord,
    DialPlanRecord,
    DialPlanRule,
    LedgerRecord,
    RateRecord,
    RateTableRecord,
    TrunkRecord,
    UserSettings,
    VoicemailRecord,
    hash_token,
    new_token,
)
from minipbx.store.pbxrepos import (
    SqlAdminRepo,
    SqlCardRepo,
    SqlDialPlanRepo,
    SqlLedgerRepo,
    SqlRateRepo,
    SqlSettingsRepo,
    SqlTrunkRepo,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
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
    "AdminRecord",
    "ApiTokenRecord",
    "CardRecord",
    "ConflictError",
    "Credentials",
    "CsvImportError",
    "Database",
    "DialPlanRecord",
    "DialPlanRule",
    "DirectorySnapshot",
    "DirectorySource",
    "ImportProblem",
    "ImportResult",
    "InvalidInputError",
    "LedgerRecord",
    "NotFoundError",
    "RateRecord",
    "RateTableRecord",
    "RegistrationRecord",
    "RegistrationRepo",
    "SqlAdminRepo",
    "SqlCardRepo",
    "SqlDialPlanRepo",
    "SqlDirectorySource",
    "SqlLedgerRepo",
    "SqlRateRepo",
    "SqlRegistrationRepo",
    "SqlSettingsRepo",
    "SqlTenantRepo",
    "SqlTrunkRepo",
    "SqlUserRepo",
    "SqlUserSettingsRepo",
    "SqlVoicemailRepo",
    "StaticDirectorySource",
    "StoreError",
    "TenantRecord",
    "TenantRepo",
    "TrunkRecord",
    "UserDirectory",
    "UserRecord",
    "UserRepo",
    "UserSettings",
    "VoicemailRecord",
    "default_url",
    "hash_token",
    "head_revision",
    "new_token",
    "parse_url",
]
