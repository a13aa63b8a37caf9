"""Regenerate sandbox/data/contacts.csv: 1,000 deterministic Italian and UK mobile numbers for the demo.

Run: .venv/bin/python scripts/make_sandbox_contacts.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberType

OUT = Path(__file__).resolve().parent.parent / "sandbox" / "data" / "contacts.csv"
IT_PREFIXES = (
    "320",
    "324",
    "327",
    "328",
    "329",
    "330",
    "331",
    "333",
    "334",
    "335",
    "338",
    "339",
    "340",
    "342",
    "345",
    "346",
    "347",
    "348",
    "349",
    "350",
    "351",
    "366",
    "368",
    "380",
    "388",
    "389",
    "391",
    "392",
    "393",
)
IT_NAMES = (
    "Marco",
    "Giulia",
    "Luca",
    "Francesca",
    "Alessandro",
    "Chiara",
    "Matteo",
    "Sara",
    "Lorenzo",
    "Martina",
    "Andrea",
    "Elena",
    "Davide",
    "Valentina",
    "Simone",
    "Federica",
    "Giorgio",
    "Anna",
    "Paolo",
    "Laura",
    "Stefano",
    "Silvia",
    "Riccardo",
    "Alessia",
    "Tommaso",
    "Beatrice",
)
IT_CITIES = (
    "Milano",
    "Roma",
    "Torino",
    "Napoli",
    "Bologna",
    "Firenze",
    "Genova",
    "Bari",
    "Palermo",
    "Verona",
    "Padova",
    "Trieste",
    "Brescia",
    "Parma",
    "Modena",
)
EN_NAMES = (
    "Oliver",
    "Emma",
    "Harry",
    "Amelia",
    "George",
    "Isla",
    "Jack",
    "Ava",
    "Noah",
    "Mia",
    "Charlie",
    "Grace",
    "Thomas",
    "Sophie",
    "James",
    "Lily",
    "William",
    "Freya",
)
EN_CITIES = (
    "London",
    "Manchester",
    "Birmingham",
    "Leeds",
    "Glasgow",
    "Bristol",
    "Liverpool",
    "Edinburgh",
    "Cardiff",
    "Oxford",
)
ROWS = 1000
ITALIAN_SHARE = 0.7
NO_CONSENT_SHARE = 0.03


def _candidate(rng: random.Random, italian: bool) -> str:
    if italian:
        return f"+39{rng.choice(IT_PREFIXES)}{rng.randrange(10**7):07d}"
    return f"+447{rng.randrange(400, 1000)}{rng.randrange(10**6):06d}"


def _valid_mobile(number: str) -> bool:
    parsed = phonenumbers.parse(number)
    mobile = phonenumbers.number_type(parsed) in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    return phonenumbers.is_valid_number(parsed) and mobile


def main() -> None:
    rng = random.Random(20260321)
    seen: set[str] = set()
    rows = []
    while len(rows) < ROWS:
        italian = rng.random() < ITALIAN_SHARE
        number = _candidate(rng, italian)
        if number in seen or not _valid_mobile(number):
            continue
        seen.add(number)
        name = rng.choice(IT_NAMES if italian else EN_NAMES)
        city = rng.choice(IT_CITIES if italian else EN_CITIES)
        consent = "no" if rng.random() < NO_CONSENT_SHARE else "yes"
        rows.append((number, name, city, "it" if italian else "en", consent))
    with OUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("phone", "first_name", "city", "language", "consent"))
        writer.writerows(rows)
    print(f"wrote {len(rows)} contacts to {OUT}")


if __name__ == "__main__":
    main()
