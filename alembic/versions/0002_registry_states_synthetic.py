"""job-kind registry, both states + control, synthetic visualizations

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

* ``jobs.step_key``: the chain step a child job is (labels come from the registry);
* ``runs.rows``: Table 3.1 rows of the selected and the final state (per layer, "all");
* ``runs.control_run_id``: the α = 0 control run of an attack with the same settings;
* ``unit_results``: the SPEC §4 measures a visualize job writes (the unused
  ``synthetic_before_id`` / ``synthetic_after_id`` columns go: images are rows of
  ``synthetic_images``, several seeds per unit and state);
* ``synthetic_images``: one row per rendered image.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # plain ADD COLUMNs: on SQLite a batch would recreate jobs / runs, which other tables reference
    op.add_column('jobs', sa.Column('step_key', sa.String(length=64), nullable=True))
    op.add_column('runs', sa.Column('rows', JSONType, nullable=False, server_default='[]'))
    op.add_column('runs', sa.Column('control_run_id', sa.Integer(), nullable=True))
    if not _sqlite():   # SQLite cannot add a constraint to a table; the ORM keeps the link consistent there
        op.create_foreign_key('fk_runs_control_run_id', 'runs', 'runs', ['control_run_id'], ['id'],
                              ondelete='SET NULL')
    with op.batch_alter_table('unit_results') as b:     # referenced by no table: recreated on SQLite
        b.add_column(sa.Column('synthetic_clip_delta', sa.Float(), nullable=True))
        b.add_column(sa.Column('synthetic_transfer', sa.Float(), nullable=True))
        b.add_column(sa.Column('ns_agreement', sa.Float(), nullable=True))
        b.drop_column('synthetic_before_id')
        b.drop_column('synthetic_after_id')
    op.create_table('synthetic_images',
    sa.Column('id', BigId, nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('layer', sa.String(length=300), nullable=False),
    sa.Column('unit', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('objective', sa.String(length=32), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('activation', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'layer', 'unit', 'state', 'seed', name='uq_synthetic_images_job_unit_state_seed')
    )
    op.create_index('ix_synthetic_images_run_layer_unit', 'synthetic_images', ['run_id', 'layer', 'unit'])
    op.create_index('ix_synthetic_images_model_layer_unit', 'synthetic_images', ['model_id', 'layer', 'unit', 'job_id'])


def downgrade() -> None:
    op.drop_index('ix_synthetic_images_model_layer_unit', table_name='synthetic_images')
    op.drop_index('ix_synthetic_images_run_layer_unit', table_name='synthetic_images')
    op.drop_table('synthetic_images')
    with op.batch_alter_table('unit_results') as b:
        b.add_column(sa.Column('synthetic_before_id', sa.Integer(), nullable=True))
        b.add_column(sa.Column('synthetic_after_id', sa.Integer(), nullable=True))
        b.drop_column('ns_agreement')
        b.drop_column('synthetic_transfer')
        b.drop_column('synthetic_clip_delta')
    if not _sqlite():
        op.drop_constraint('fk_runs_control_run_id', 'runs', type_='foreignkey')
    op.drop_column('runs', 'control_run_id')       # SQLite ≥ 3.35 drops plain columns in place
    op.drop_column('runs', 'rows')
    op.drop_column('jobs', 'step_key')
