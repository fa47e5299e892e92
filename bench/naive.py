"""The baseline: what a user would write by hand to plan a sync (pure Python, row by row).

csv.DictReader, a dict per row, json.dumps(sort_keys=True), sha256, a dict of the last body per
email; given a ledger, its hashes and keys loaded into a dict and a set, and compared.
Run as a script so its time and peak memory are measured like `loops-sync plan`'s.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import sys
from datetime import datetime


def plan(path: str) -> tuple[int, int, dict[str, tuple[str, str]]]:
    bodies: dict[str, tuple[str, str]] = {}
    rejected = 0
    with open(path, newline="", encoding="utf-8") as source:
        for row in csv.DictReader(source):
            email = row["Email"].strip().lower()
            if "@" not in email:
                rejected += 1
                continue
            try:
                size = float(row["Employee Count"])
                enriched = datetime.fromisoformat(row["Enriched At"].replace("Z", "+00:00"))
            except ValueError:
                rejected += 1
                continue
            body = {
                "email": email,
                "firstName": row["First Name"],
                "lastName": row["Last Name"],
                "company": row["Company Name"],
                "jobTitle": row["Job Title"],
                "companySize": int(size) if size.is_integer() else size,
                "enrichedAt": int(enriched.timestamp() * 1000),
                "source": "clay",
                "mailingLists": {"cm06f5v0e45nf0ml5754o9cix": row["Newsletter"] == "TRUE"},
            }
            text = json.dumps(body, sort_keys=True, separators=(",", ":"))
            key = hashlib.sha256(f"signup|{email}".encode()).hexdigest()
            bodies[email] = (hashlib.sha256(text.encode()).hexdigest(), key)
    return len(bodies), rejected, bodies


def diff(bodies: dict[str, tuple[str, str]], ledger: str) -> int:
    """How many requests the ledger says to send: changed contacts and undelivered events.

    Its hashes are its own, not loops-sync's, so against loops-sync's ledger it finds every
    row changed; a lookup costs the same whether it hits or misses."""
    db = sqlite3.connect(ledger)
    hashes = dict(db.execute("SELECT identity, hash FROM contacts"))
    keys = {key for (key,) in db.execute("SELECT key FROM events")}
    to_send = 0
    for email, (body_hash, key) in bodies.items():
        to_send += hashes.get(f"e:{email}") != body_hash
        to_send += key not in keys
    return to_send


if __name__ == "__main__":
    contacts, rejected, bodies = plan(sys.argv[1])
    sends = diff(bodies, sys.argv[2]) if len(sys.argv) > 2 else 2 * contacts
    print(f"{contacts} contacts, {rejected} rejected, {sends} requests")
