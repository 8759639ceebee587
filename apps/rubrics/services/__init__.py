"""Rubric services by noun: parsing, store (the draft's rows), versions, diff, edits, editor, summary, errors."""
