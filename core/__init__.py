"""The shared contract that batch, streaming and online scoring all import.

Settings, the FeatureService name and feature order, the window-aggregation
definitions, the event schema and the one predictor live here, so the three
modes cannot drift apart.
"""
