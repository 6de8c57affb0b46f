"""Uploads, cut by job (docs/quota.md, "No reservation without a request"):

- ``admission``: the upload path, validate → record → reserve → presign, in batches;
- ``janitor``: removes the rows and reservations of uploads no URL was issued for;
- ``idempotency``: replays of an Idempotency-Key, waiting for the first verdict;
- ``urls``: the presigned request and the answer, for admissions and replays alike;
- ``lifecycle``: status, complete, cancel;
- ``sweeper``: expiry and the audit of Redis against Postgres, and their loop;
- ``windows``: the admission window they all keep.

gateway/runtime.py builds them, each on what it uses.
"""

from gateway.uploads.admission import AdmissionService
from gateway.uploads.idempotency import Idempotency
from gateway.uploads.janitor import Janitor
from gateway.uploads.lifecycle import LifecycleService
from gateway.uploads.sweeper import Sweeper
from gateway.uploads.urls import UploadUrls
from gateway.uploads.windows import ADMISSION_WINDOW, AUDIT_AGE

__all__ = [
    "ADMISSION_WINDOW",
    "AUDIT_AGE",
    "AdmissionService",
    "Idempotency",
    "Janitor",
    "LifecycleService",
    "Sweeper",
    "UploadUrls",
]
