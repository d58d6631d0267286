"""The run plan: everything decided once, in the main process, before residents are simulated.

Geography, institutions and staff, injected outbreaks, dates and defect rates.  A plan is a pure
function of the run parameters (seed, persons, province, years, end, rates), is pickled to the
worker processes, and is all a chunk needs besides its own township.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from random import Random

from phip.synth import geography, institutions
from phip.synth.defects import DefectRates
from phip.synth.geography import Geography
from phip.synth.infectious import Outbreak, plan_outbreaks
from phip.synth.institutions import Registry

DEFAULT_END = date(2025, 12, 31)
"""End of the simulated period when none is given: fixed, so a seed always gives the same bytes."""


@dataclass(slots=True)
class Plan:
    seed: int
    persons: int
    start: date
    end: date
    rates: DefectRates
    geo: Geography
    registry: Registry
    outbreaks: list[Outbreak] = field(default_factory=list)
    slots: int = 0  # identity-number sequence slots: one per township chunk + one for staff

    def rng(self, *parts: object) -> Random:
        """An independent random stream for a named purpose (never the global random)."""
        return Random("|".join([str(self.seed), *map(str, parts)]))


def make_plan(
    persons: int,
    seed: int,
    province: str = "51",
    years: int = 10,
    end: date | None = None,
    rates: DefectRates | None = None,
) -> Plan:
    if persons < 1:
        raise ValueError("persons must be at least 1")
    if years < 1:
        raise ValueError("years must be at least 1")
    end = end or DEFAULT_END
    from phip.synth.population import add_years

    start = add_years(end, -years) + timedelta(days=1)
    rates = rates if rates is not None else DefectRates()
    geo = geography.plan(province, persons, Random(f"{seed}|geography"))
    chunks = len(geo.towns)
    slots = chunks + 1
    registry = institutions.plan_institutions(
        geo, Random(f"{seed}|institutions"), start, rates.local_codes, staff_slot=chunks, slots=slots
    )
    outbreaks = plan_outbreaks(geo, Random(f"{seed}|outbreaks"), start, end)
    return Plan(seed, persons, start, end, rates, geo, registry, outbreaks, slots)
