"""HTTP API (FastAPI): ``/api/v1``, one router per resource; see docs/API.md."""
