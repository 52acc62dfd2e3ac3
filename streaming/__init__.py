"""Streaming mode: a Bytewax dataflow that keeps window aggregates fresh and scores every event.

``streaming.dataflow:get_flow`` wires the steps; the steps themselves (parsing,
event-time window state, feature assembly, online writes) are plain functions
and classes beside it, so unit tests exercise them without a broker.
"""
