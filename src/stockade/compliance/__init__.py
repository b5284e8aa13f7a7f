"""Compliance: the tamper-evident audit log (`audit.py`)."""

from .audit import AuditLog, VerifyResult

__all__ = ["AuditLog", "VerifyResult"]
