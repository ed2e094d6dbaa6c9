"""Routers per resource: system, models, image sets, jobs, runs (and shares), unit labels (search), Slingshots target images."""
