"""Offline, faithful fakes of every provider API, with fault injection.

    sim = Simulator(faults=[Fault(kind="rate_limit", provider="openai", first_n=2)])
    ctx = RunContext.create("out", keys=sim.keys(), transport=sim.transport())

Each provider's fake lives in its own module here (``openai``, ``azure``, …) and speaks that
provider's paths, auth headers, bodies, status codes, polling and error envelopes.
"""

from calliope_graph.simulate._core import (
    FAKE_MODULES,
    FAULT_KINDS,
    FAULT_OPTIONS,
    Fault,
    FaultSpecError,
    ProviderFake,
    Simulator,
    parse_faults,
)

__all__ = [
    "FAKE_MODULES",
    "FAULT_KINDS",
    "FAULT_OPTIONS",
    "Fault",
    "FaultSpecError",
    "ProviderFake",
    "Simulator",
    "parse_faults",
]
