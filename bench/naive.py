"""The baseline: what a user would write by hand to plan a sync (pure Python, row by row).

csv.DictReader, a dict per row, json.dumps(sort_keys=True), sha256, a set of seen emails.
Run as a script so its time and peak memory are measured like `loops-sync plan`'s.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from datetime import datetime


def plan(path: str) -> tuple[int, int]:
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
    return len(bodies), rejected


if __name__ == "__main__":
    contacts, rejected = plan(sys.argv[1])
    print(f"{contacts} contacts, {rejected} rejected")
