"""hidden rows: models, image sets, runs and jobs (sweeps are jobs) can be hidden

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

``hidden`` (boolean, false for every existing row) leaves a row out of the lists and the
pickers without deleting it: a model or an image set that something derives from (runs,
pruned models, scans) cannot be deleted, but it can be hidden (issue 19).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TABLES = ('models', 'image_sets', 'runs', 'jobs')


def upgrade() -> None:
    # plain ADD COLUMNs (with a server default, so existing rows read false): SQLite supports them
    # without a batch, which would recreate tables that other tables reference
    for t in TABLES:
        op.add_column(t, sa.Column('hidden', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # dropping a column is where SQLite needs a batch (a table copy)
    for t in reversed(TABLES):
        with op.batch_alter_table(t) as b:
            b.drop_column('hidden')
