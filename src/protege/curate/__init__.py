"""Curation: load questions, normalize, dedupe, split off a held-out set, select N."""
