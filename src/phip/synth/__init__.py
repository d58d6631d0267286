"""Synthetic Chinese region generator (issue 3): FHIR R4 NDJSON per institution, plus truth files.

``run(out, persons, seed, ...)`` simulates a real province's counties (GB/T 2260), their
institutions and residents over the years, and writes what each institution would send, with the
defects real platforms receive, and ``truth/`` files saying what really happened.  See
``docs/synth.md`` for the layout and formats.
"""

from phip.synth.defects import DefectRates
from phip.synth.engine import Summary, run
from phip.synth.plan import DEFAULT_END

__all__ = ["DEFAULT_END", "DefectRates", "Summary", "run"]
