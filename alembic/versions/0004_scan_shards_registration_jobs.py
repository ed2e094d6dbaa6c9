"""sharded scans and folder registration as a job

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

* ``jobs.group_job_id``: the job this one is a member of (a ``scan_shard`` → its scan);
  the group job is runnable only once every member succeeded (a Celery group whose
  fan-in is a row condition, so the reaper, resume and cancel treat shards as jobs);
* ``image_sets.status`` (``ready`` | ``indexing`` | ``failed``), ``image_sets.job_id``
  (the ``register_images`` job of a folder) and ``image_sets.error``: a folder is
  indexed by a job with progress, not inside the HTTP request. Existing rows are ready.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # plain ADD COLUMNs: on SQLite a batch would recreate jobs / image_sets, which other tables reference
    op.add_column('jobs', sa.Column('group_job_id', sa.Integer(), nullable=True))
    op.create_index('ix_jobs_group_job_id', 'jobs', ['group_job_id'])
    if not _sqlite():   # SQLite cannot add a constraint to a table; the ORM keeps the link consistent there
        op.create_foreign_key('fk_jobs_group_job_id', 'jobs', 'jobs', ['group_job_id'], ['id'], ondelete='CASCADE')
    op.add_column('image_sets', sa.Column('status', sa.String(length=16), nullable=False, server_default='ready'))
    op.add_column('image_sets', sa.Column('job_id', sa.Integer(), nullable=True))
    op.add_column('image_sets', sa.Column('error', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('image_sets') as b:
        b.drop_column('error')
        b.drop_column('job_id')
        b.drop_column('status')
    if not _sqlite():
        op.drop_constraint('fk_jobs_group_job_id', 'jobs', type_='foreignkey')
    op.drop_index('ix_jobs_group_job_id', 'jobs')
    with op.batch_alter_table('jobs') as b:
        b.drop_column('group_job_id')
