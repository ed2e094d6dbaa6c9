"""pruning defences: model lineage and sweep points (SPEC §5)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

* ``models.parent_model_id``: the model a pruned model was made from;
* ``models.prune_job_id``: the prune job that fills the row (a sweep creates the row when
  it is launched, so the audits of the pruned model can name it; the row has no
  checkpoint until that job succeeds);
* ``models.prune``: what the prune job recorded: method, rate, the PruneReport (weight and
  filter pruning rates, per-layer counts; no masks: pruned weights are the zeros of the
  checkpoint), the fine-tune schedule and the fine-tuned accuracy with its image count,
  and the architecture record of a structurally pruned model;
* ``sweep_points``: one row per grid point of a sweep job: its values, the model it audits
  and the runs of its audits (the sweep's results table is read from them).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # plain ADD COLUMNs: on SQLite a batch would recreate models, which other tables reference
    op.add_column('models', sa.Column('parent_model_id', sa.Integer(), nullable=True))
    op.add_column('models', sa.Column('prune_job_id', sa.Integer(), nullable=True))
    op.add_column('models', sa.Column('prune', JSONType, nullable=True))
    op.create_index('ix_models_prune_job_id', 'models', ['prune_job_id'])
    if not _sqlite():   # SQLite cannot add a constraint to a table; the ORM keeps the link consistent there
        op.create_foreign_key('fk_models_parent_model_id', 'models', 'models', ['parent_model_id'], ['id'],
                              ondelete='SET NULL')
    op.create_table('sweep_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sweep_job_id', sa.Integer(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=300), nullable=False),
    sa.Column('values', JSONType, nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=True),
    sa.Column('prune_job_id', sa.Integer(), nullable=True),
    sa.Column('runs', JSONType, nullable=False),
    sa.ForeignKeyConstraint(['sweep_job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sweep_job_id', 'idx', name='uq_sweep_points_job_idx'))


def downgrade() -> None:
    op.drop_table('sweep_points')
    if not _sqlite():
        op.drop_constraint('fk_models_parent_model_id', 'models', type_='foreignkey')
    op.drop_index('ix_models_prune_job_id', 'models')
    with op.batch_alter_table('models') as b:
        b.drop_column('prune')
        b.drop_column('prune_job_id')
        b.drop_column('parent_model_id')
