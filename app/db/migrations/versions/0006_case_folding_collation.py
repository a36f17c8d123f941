"""a collation of our own for case folding on PostgreSQL

`nameContains` and `platform` match by Unicode's simple lowercase mapping (app/db/folding.py).
PostgreSQL's `lower()` folded under the database's own character classification, which does
so in a UTF-8 database of a UTF-8 locale, but folds ASCII only under a plain `C` locale
("ärger" did not find "Ärger") and maps "I" to "ı" under a Turkish one ("izmir" did not find
"IZMIR"). `lower()` now runs under `ims_fold`, a collation made here from the first that the
server has of: ICU's root locale, libc's C.UTF-8, en_US.UTF-8 — whatever the database's own
locale. A server with none of them (no ICU, no UTF-8 libc locale) gets the database's own
character classification, as before. SQLite: nothing to do (a function of ours folds there).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 01:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

#: Made once per schema; each attempt in a subtransaction of its own, so a provider or a locale
#: the server lacks only moves on to the next.
CREATE = """
DO $$
DECLARE
    candidate text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation
               WHERE collname = 'ims_fold' AND collnamespace = current_schema()::regnamespace) THEN
        RETURN;
    END IF;
    BEGIN
        CREATE COLLATION ims_fold (provider = icu, locale = 'und');
        RETURN;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    FOREACH candidate IN ARRAY ARRAY['C.UTF-8', 'C.utf8', 'en_US.UTF-8', 'en_US.utf8'] LOOP
        BEGIN
            EXECUTE format('CREATE COLLATION ims_fold (provider = libc, locale = %L)', candidate);
            RETURN;
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
    EXECUTE format('CREATE COLLATION ims_fold (provider = libc, locale = %L)', current_setting('lc_ctype'));
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP COLLATION IF EXISTS ims_fold")
