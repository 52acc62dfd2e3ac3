"""The test and proof harness: what the tests, the proofs (``verify``), the benchmarks
(``bench``) and the demo scripts share, one module per job. Not shipped with the product.

- ``workspace``: a feature repo copy with its own data and Redis database (the one builder)
- ``kafka``: private topics, producing, reading a topic to its end, paced producer, watcher
- ``flow``: the dataflow's environment, launched, interrupted or run to its end
- ``stream``: private users and events, and the checks of what a flow left behind
- ``loadgen``: open- and closed-loop HTTP load on keep-alive connections (the online proofs)
- ``servers``: free ports, ``python -m serving`` until ready, private Redis and Kafka
- ``reference``: the brute-force point-in-time join
- ``report``: the Check table and JSON every proof prints
"""
