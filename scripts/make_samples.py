"""Write the files in sample_data/ (run once; the outputs are committed).

A Clay-style enrichment export with the mess real exports have (bad emails, a formula cell,
duplicates differing in case, a quoted comma and newline, a value over Loops' 500 characters),
a Parquet dump of product users, and a small SQLite app database.
"""

from __future__ import annotations

import csv
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

OUT = Path(__file__).resolve().parents[1] / "sample_data"
FIRST = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Guido",
    "Radia",
    "Dennis",
    "Frances",
    "Tim",
    "Sophie",
    "José",
    "Zoë",
    "Björn",
    "Aiko",
    "Chidi",
    "Priya",
    "Mateo",
    "Ingrid",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "van Rossum",
    "Perlman",
    "Ritchie",
    "Allen",
    "Berners-Lee",
    "Wilson",
    "García",
    "Müller",
    "Lindqvist",
    "Tanaka",
    "Okafor",
    "Sharma",
    "Rossi",
    "Berg",
]
COMPANIES = [
    ("Acme Analytics", "acme.io", "SaaS"),
    ("Northwind", "northwind.com", "Retail"),
    ("Globex", "globex.net", "Manufacturing"),
    ("Initech", "initech.co", "Software"),
    ("Umbrella Health", "umbrella.health", "Healthcare"),
    ("Hooli", "hooli.xyz", "Internet"),
    ("Stark Industries", "stark.com", "Defense"),
    ("Wayne Enterprises", "wayne.co", "Conglomerate"),
]
TITLES = ["Head of Growth", "Data Engineer", "VP Marketing", "Founder", "Lifecycle Manager", "CTO"]


def clay_rows() -> list[dict[str, str]]:
    rng = random.Random(7)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    rows = []
    for i in range(48):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 7 + i // len(FIRST)) % len(LAST)]
        company, domain, industry = COMPANIES[i % len(COMPANIES)]
        enriched = start + timedelta(hours=rng.randint(0, 24 * 60), minutes=rng.randint(0, 59))
        rows.append(
            {
                "First Name": first,
                "Last Name": last,
                "Email": f"{first.lower()}.{last.lower().replace(' ', '')}@{domain}".replace(
                    "é", "e"
                )
                .replace("ü", "u")
                .replace("ë", "e")
                .replace("ö", "o"),
                "Company Name": company,
                "Company Domain": domain,
                "Job Title": TITLES[i % len(TITLES)],
                "Industry": industry,
                "Employee Count": str(rng.choice([8, 25, 60, 140, 420, 1200, 5400])),
                "LinkedIn URL": f"https://www.linkedin.com/in/{first.lower()}-{i}",
                "Enriched At": enriched.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "Plan": rng.choice(["free", "free", "pro", "team"]),
                "Newsletter Opt-In": rng.choice(["TRUE", "FALSE", "yes", "no", ""]),
            }
        )
    # The mess a real export carries; each one is a documented case in the README.
    rows[3]["Company Name"] = 'Acme Analytics, Inc. "EMEA"\nLondon office'
    rows[5]["Email"] = "  " + rows[5]["Email"].title() + "  "  # spaces and capitals: normalised
    rows[9]["Email"] = "frances.allen(at)hooli.xyz"
    rows[12]["Email"] = ""
    rows[15]["Employee Count"] = "~50"
    rows[18]["Enriched At"] = "last tuesday"
    rows[21]["Newsletter Opt-In"] = "maybe"
    rows[24]["Job Title"] = '=HYPERLINK("http://evil.example","click")'
    rows[27]["Industry"] = "Very long industry description. " * 20
    rows[30]["Email"] = rows[31]["Email"].upper()  # a duplicate, differing only in case
    rows[33]["First Name"] = ""  # an empty cell: left out, never sent as null
    return rows


def write_clay() -> None:
    rows = clay_rows()
    with (OUT / "clay_export.csv").open("w", newline="", encoding="utf-8-sig") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def write_parquet() -> None:
    rng = random.Random(11)
    n = 200
    start = datetime(2025, 1, 1, tzinfo=UTC)
    pl.DataFrame(
        {
            "user_id": [f"usr_{i:05d}" for i in range(n)],
            "email": [f"user{i}@example.com" for i in range(n)],
            "name": [f"{FIRST[i % 20]} {LAST[(i * 3) % 20]}" for i in range(n)],
            "plan": [rng.choice(["free", "pro", "team"]) for _ in range(n)],
            "seats": [rng.randint(1, 50) for _ in range(n)],
            "created_at": [start + timedelta(days=rng.randint(0, 600)) for _ in range(n)],
            "is_active": [rng.random() > 0.2 for _ in range(n)],
        }
    ).write_parquet(OUT / "product_users.parquet")


def write_sqlite() -> None:
    path = OUT / "app.db"
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, company TEXT,
                            plan TEXT, mrr REAL, trial_ends DATE, marketing_opt_in INTEGER);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL, placed_at TEXT);
    """)
    rng = random.Random(3)
    for i in range(1, 61):
        db.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                i,
                f"customer{i}@shop.example",
                FIRST[i % 20],
                COMPANIES[i % 8][0],
                rng.choice(["free", "pro"]),
                round(rng.uniform(0, 300), 2),
                f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                rng.randint(0, 1),
            ),
        )
        db.execute(
            "INSERT INTO orders (user_id, total, placed_at) VALUES (?, ?, ?)",
            (i, round(rng.uniform(10, 500), 2), f"2026-10-{rng.randint(1, 31):02d}T12:00:00Z"),
        )
    db.commit()
    db.close()


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    write_clay()
    write_parquet()
    write_sqlite()
