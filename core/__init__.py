"""The shared contract that batch, streaming and online scoring all import.

Settings, the FeatureService name and feature order, the one expansion of that
service into what each mode reads (``plan``), the window-aggregation definitions,
the event schema, the one DuckDB connection (``duck``) and the one predictor live
here, so the three modes cannot drift apart.
"""
