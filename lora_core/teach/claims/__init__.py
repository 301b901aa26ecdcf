"""The claims check: each claim of the seed documents as one entry of a table (table.py), its verdict,
and live evidence measured by lora_core (counts.py, measured.py, libraries.py); check.py runs it."""
