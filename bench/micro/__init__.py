"""Micro-benchmarks of one component in one process, without the network.

These are the documented exception of DESIGN §9: to measure a component alone they import
broker internals (``broker.store``, ``broker.ha``, ``broker.filter``). Every other benchmark
drives real processes through the SDK or the wire. Shared inputs live in
``bench/micro/common.py``; figures are measured with ``bench/measure.py``, as everywhere in
bench/.
"""
