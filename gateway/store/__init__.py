"""Async, keyword-only database access, split by job.

    engine.py    the engine, its dialect (checked once) and the translation of database errors
    rollouts.py  deployments, versions, rollout state (compare-and-set), audit events, decision lock
    records.py   request records and quality scores written in batches
    aggregates.py the sums kept as records are written: per minute and version, per user of the judged stage
    evidence.py  read-only analytics from the aggregates: a stage's evidence, a version's window numbers, time series
    decisions.py the rollout check's session: its lock, reads and write on one connection
    partitions.py PostgreSQL's daily partitions of records and scores, made ahead of their day
    recount.py   the aggregates recomputed from the raw records and compared with the stored ones
    retention.py rows older than their retention period removed: partitions dropped, batches deleted

`Store` is all of them over one engine: what the services are given. Every
method raises `StoreUnavailable` when the database cannot be reached or timed
out and `StoreRejected` when it refused the values, besides the domain errors
its docstring names.
"""

from __future__ import annotations

from gateway.analysis.evidence import percentile_cont
from gateway.store.decisions import DecisionSession, DecisionStore
from gateway.store.engine import Database, Dialect, create_engine, translated_errors
from gateway.store.evidence import EvidenceStore
from gateway.store.records import RecordStore
from gateway.store.retention import Expired, RetentionStore
from gateway.store.rollouts import RolloutStore

__all__ = [
    "Database",
    "DecisionSession",
    "DecisionStore",
    "Dialect",
    "EvidenceStore",
    "Expired",
    "RecordStore",
    "RetentionStore",
    "RolloutStore",
    "Store",
    "create_engine",
    "percentile_cont",
    "translated_errors",
]


class Store(DecisionStore, RecordStore, RetentionStore):
    """Every query family over one engine (`create_engine`); close it with `close()`."""
