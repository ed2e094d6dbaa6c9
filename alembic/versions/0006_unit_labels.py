"""unit labels: every unit's label in each state of a run, searchable by prefix (issue 22)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

One row per (run, layer, unit, state, describer). ``label_key`` (the label lower-cased) has
a ``text_pattern_ops`` index on Postgres so that a prefix search (``LIKE 'bag%'``) is an index
range scan; SQLite (the embedded default) uses a plain index, which serves the same query.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'unit_labels',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True),
        sa.Column('run_id', sa.Integer(), sa.ForeignKey('runs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('model_id', sa.Integer(), sa.ForeignKey('models.id', ondelete='SET NULL'), nullable=True),
        sa.Column('layer', sa.String(300), nullable=False),
        sa.Column('unit', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('describer', sa.String(32), nullable=False),
        sa.Column('label', sa.String(300), nullable=False),
        sa.Column('label_key', sa.String(300), nullable=False),
        sa.Column('class_index', sa.Integer(), nullable=True),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('p_value', sa.Float(), nullable=True),
        sa.Column('attacked', sa.Boolean(), nullable=False),
        sa.Column('changed', sa.Boolean(), nullable=False),
        sa.UniqueConstraint('run_id', 'layer', 'unit', 'state', 'describer', name='uq_unit_labels_address'),
    )
    op.create_index('ix_unit_labels_key', 'unit_labels', ['label_key', 'run_id'],
                    postgresql_ops={'label_key': 'text_pattern_ops'})
    op.create_index('ix_unit_labels_run_state', 'unit_labels', ['run_id', 'state', 'changed'])
    op.create_index('ix_unit_labels_model_state', 'unit_labels', ['model_id', 'state'])


def downgrade() -> None:
    op.drop_index('ix_unit_labels_model_state', table_name='unit_labels')
    op.drop_index('ix_unit_labels_run_state', table_name='unit_labels')
    op.drop_index('ix_unit_labels_key', table_name='unit_labels')
    op.drop_table('unit_labels')
