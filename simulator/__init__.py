"""A deterministic simulator: the real policy and pipeline steps on a virtual clock.

- :func:`simulator.scenario.load_scenario` reads and validates a scenario file;
- :func:`simulator.run.simulate` runs one scenario under one policy and returns its report;
- :func:`simulator.report.run_policies` runs several policies and returns their reports.
Only transport, clock and HTTP are swapped: Keepa is :mod:`simulator.keepa_model`, storage is
:mod:`storage.memory`.
"""
