"""Numbered SQL migrations (`NNNN_name.sql`) and their runner (`migrations.runner`).

This package is the only place that creates or alters tables.
"""
