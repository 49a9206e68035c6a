"""Offline, faithful fakes of every provider API, with fault injection.

    sim = Simulator(faults=[Fault(kind="rate_limit", provider="openai", first_n=2)])
    ctx = RunContext.create("out", keys=sim.keys(), transport=sim.transport())

Each provider's fake lives in its own module here (``openai``, ``azure_vision``, …) and speaks that
provider's paths, auth headers, bodies, status codes, polling and error envelopes.

``Simulator(limits={"openai": {"rpm": 500, "tpm": 200000}, "stability": {"rpm": 60}})`` makes
the fakes limit like the providers (429s with Retry-After and the providers' rate-limit
headers, Stability's 60 s block, Runway's THROTTLED tasks); :mod:`.server` serves one
simulator over loopback HTTP (``calliope-graph simulate``) for several processes and SDKs.
"""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py).
if TYPE_CHECKING:
    from calliope_graph.simulate._core import (
        FAULT_KINDS,
        FAULT_OPTIONS,
        Fault,
        FaultSpecError,
        ProviderFake,
        Simulator,
        parse_faults,
    )
    from calliope_graph.simulate._limits import parse_simulate_limits
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.simulate._core": [
                "FAULT_KINDS",
                "FAULT_OPTIONS",
                "Fault",
                "FaultSpecError",
                "ProviderFake",
                "Simulator",
                "parse_faults",
            ],
            "calliope_graph.simulate._limits": ["parse_simulate_limits"],
        },
    )

__all__ = [
    "FAULT_KINDS",
    "FAULT_OPTIONS",
    "Fault",
    "FaultSpecError",
    "ProviderFake",
    "Simulator",
    "parse_faults",
    "parse_simulate_limits",
]
