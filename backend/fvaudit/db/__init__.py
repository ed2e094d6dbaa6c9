"""Database: the SQLAlchemy 2 tables (``db.tables``), engine/session factory (``db.session``).

Web- and torch-free: the API, the worker and the CLI all import it.
"""
from fvaudit.db.tables import (APIToken, Artifact, Base, Image, ImageSet, Job, JobEvent, Model, Run, Scan,
                               ScanLayer, ShareLink, UnitResult, User)
from fvaudit.db.session import get_engine, session_scope, sessionmaker_for

__all__ = ["APIToken", "Artifact", "Base", "Image", "ImageSet", "Job", "JobEvent", "Model", "Run", "Scan",
           "ScanLayer", "ShareLink", "UnitResult", "User", "get_engine", "session_scope", "sessionmaker_for"]
