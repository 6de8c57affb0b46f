"""The object ledger: one settle step for every change to what is stored.

S3 events (webhook and SQS), ``complete`` (a HEAD on S3), API deletes and tenant
rescans all become ``ObjectChange``s, settled here in one transaction per batch
(``Ledger.settle``): the ledger rows, the tenants' and projects' usage, and the
settlement of pending uploads; then Redis is brought in step.

* ``plan``: what a batch writes, decided without I/O (``plan_batch``: the ordering,
  usage and settlement rules, unit-tested on their own).
* ``settle``: the ``Ledger`` that locks the rows, writes the plan to Postgres and
  mirrors it into Redis (``Settlement``: what it did).
"""

from gateway.ledger.plan import ObjectChange, Policy
from gateway.ledger.settle import Ledger, Settlement

__all__ = ["Ledger", "ObjectChange", "Policy", "Settlement"]
