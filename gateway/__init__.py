"""Presigned-upload gateway with per-tenant storage quotas."""

__version__ = "0.1.0"
