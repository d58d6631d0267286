"""Running the generator: plan, simulate every township (in parallel), merge, write the manifest.

The output is a pure function of (persons, seed, province, years, end, defect rates): every random
draw comes from a ``random.Random`` seeded with a string naming its purpose (seed, township,
household, person, stream), never from the global generator, ``hash()`` or set order; timestamps
derive from the simulated dates.  Townships are independent units of work; each writes a shard,
and shards are merged in township order, so the bytes do not depend on the number of workers.
Memory is bounded by one township's residents, whatever the total.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from phip.synth import care, institutions, names, registry, truth, writer
from phip.synth.defects import DefectRates
from phip.synth.plan import Plan, make_plan
from phip.synth.population import Counters, build_in_migrants, build_initial, simulate_life
from phip.synth.records import Emitter, local_code_rows

MANIFEST = "manifest.json"


@dataclass(slots=True)
class ChunkResult:
    """What one township produced (counts only; the data is in its shard)."""

    chunk: int
    residents: int
    people: int = 0
    births: int = 0
    deaths: int = 0
    moved_out: int = 0
    in_migrants: int = 0
    files: Counter[tuple[str, str]] = field(default_factory=Counter)
    bytes: int = 0
    outbreak_cases: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Summary:
    """The result of :func:`phip.synth.run`."""

    out: Path
    seed: int
    province: str
    start: date
    end: date
    residents: int  # at the start
    people: int  # everyone ever simulated (with births and arrivals)
    births: int
    deaths: int
    moved_out: int
    in_migrants: int
    institutions: int
    practitioners: int
    counties: int
    townships: int
    resources: dict[str, int]
    bytes: int
    seconds: float
    workers: int

    @property
    def total_resources(self) -> int:
        return sum(self.resources.values())


def run_chunk(plan: Plan, chunk: int, shards: Path) -> ChunkResult:
    """Simulate one township into ``shards/<chunk>``."""
    town = plan.geo.towns[chunk]
    em = Emitter(plan, chunk, shards / f"{chunk + 1:03d}")
    ctr = Counters(chunk, names.IdAllocator(chunk, plan.slots), names.PhoneBook(chunk))
    rng = plan.rng("township", chunk)
    households = build_initial(plan, town, rng, ctr)
    residents = sum(len(h.members) for h in households)
    households += build_in_migrants(plan, town, rng, ctr, len(households))
    result = ChunkResult(chunk, residents)
    for hh in households:
        simulate_life(plan, hh, plan.rng(hh.hid, "life"), ctr)
        if hh.arrived is not None:
            result.in_migrants += len([p for p in hh.members if p.born is None])
        for p in hh.members:
            result.people += 1
            result.births += p.born is not None
            result.deaths += p.death is not None and p.death <= p.last
            result.moved_out += hh.left is not None and p.last < plan.end and (p.death is None or p.death > p.last)
            care.simulate_person(care.make_ctx(plan, em, p))
        registry.emit(em, hh)
    em.close()
    result.files = em.out.files
    result.bytes = em.out.size()
    result.outbreak_cases = em.outbreak_cases
    return result


_WORKER_PLAN: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan


def _worker(chunk: int, shards: str) -> ChunkResult:
    assert _WORKER_PLAN is not None
    return run_chunk(_WORKER_PLAN, chunk, Path(shards))


def _static(plan: Plan, shard: Path) -> ChunkResult:
    """Institutions, staff and local code lists (written once, by the main process)."""
    out = writer.ShardWriter(shard)
    tw = truth.TruthWriter(shard)
    for org, res in institutions.resources(plan.registry, plan.start):
        out.write(org, res)
    for s in plan.registry.staff:
        tw.row("staff", s.id, s.org, s.role, s.id_number, s.name.text, s.sex, s.birth.isoformat(), s.licence)
    for inst in plan.registry.by_id.values():
        for row in local_code_rows(inst):
            tw.row("local_codes", *row)
    out.close()
    tw.close()
    return ChunkResult(-1, 0, files=out.files, bytes=out.size())


def run(
    out: Path,
    persons: int,
    seed: int,
    province: str = "51",
    years: int = 10,
    end: date | None = None,
    progress: bool = True,
    defects: DefectRates | None = None,
    workers: int | None = None,
) -> Summary:
    """Generate a synthetic region into ``out`` (which must not exist or be empty).

    ``workers`` is the number of processes (default: the CPU count, at most the number of
    townships); the output is the same for any value.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    plan = make_plan(persons, seed, province, years, end, defects)
    out.mkdir(parents=True, exist_ok=True)
    n_chunks = len(plan.geo.towns)
    workers = max(1, min(workers or os.cpu_count() or 1, n_chunks))
    shards = out / ".shards"
    shards.mkdir()
    truth.write_headers(out)
    results: list[ChunkResult] = [_static(plan, shards / "000")]
    writer.merge([shards / "000"], out)
    merger = _Merger(shards, out)
    bar = _Progress(progress, persons, n_chunks)
    with bar:
        if workers == 1:
            for c in range(n_chunks):
                r = run_chunk(plan, c, shards)
                results.append(r)
                bar.advance(r.residents)
                merger.done(c)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(plan,)) as pool:
                futures = [pool.submit(_worker, c, str(shards)) for c in range(n_chunks)]
                for fut in as_completed(futures):
                    r = fut.result()
                    results.append(r)
                    bar.advance(r.residents)
                    merger.done(r.chunk)
        bar.merging()
        merger.finish(n_chunks)
        shards.rmdir()
    results.sort(key=lambda r: r.chunk)
    cases: Counter[str] = Counter()
    for r in results:
        cases.update(r.outbreak_cases)
    tw = truth.TruthWriter(out)
    for ob in plan.outbreaks:
        n_weeks = ((ob.end - ob.start).days + 1) // 7
        weeks = ";".join(_iso_week(ob.start + timedelta(days=7 * i)) for i in range(n_weeks))
        tw.row(
            "outbreaks",
            ob.oid,
            ob.county,
            ob.disease,
            _icd(ob.disease),
            ob.start.isoformat(),
            ob.end.isoformat(),
            weeks,
            ob.age_from,
            ob.age_to,
            ob.expected,
            cases[ob.oid],
        )
    tw.close()
    files: Counter[tuple[str, str]] = Counter()
    for r in results:
        files.update(r.files)
    by_type: Counter[str] = Counter()
    for (_org, rtype), n in files.items():
        by_type[rtype] += n
    summary = Summary(
        out=out,
        seed=seed,
        province=plan.geo.province.code,
        start=plan.start,
        end=plan.end,
        residents=sum(r.residents for r in results),
        people=sum(r.people for r in results),
        births=sum(r.births for r in results),
        deaths=sum(r.deaths for r in results),
        moved_out=sum(r.moved_out for r in results),
        in_migrants=sum(r.in_migrants for r in results),
        institutions=len(plan.registry.by_id),
        practitioners=len(plan.registry.staff),
        counties=len(plan.geo.counties),
        townships=n_chunks,
        resources=dict(sorted(by_type.items())),
        bytes=sum(r.bytes for r in results),
        seconds=0.0,
        workers=workers,
    )
    _manifest(out, plan, summary, files)
    summary.seconds = time.perf_counter() - t0
    return summary


class _Merger:
    """Merges township shards into the output in township order, as soon as each can go."""

    def __init__(self, shards: Path, out: Path) -> None:
        self.shards, self.out = shards, out
        self.next = 0
        self.ready: set[int] = set()

    def done(self, chunk: int) -> None:
        self.ready.add(chunk)
        while self.next in self.ready:
            writer.merge([self.shards / f"{self.next + 1:03d}"], self.out)
            self.ready.discard(self.next)
            self.next += 1

    def finish(self, n_chunks: int) -> None:
        if self.next != n_chunks:
            raise RuntimeError(f"townships {self.next}..{n_chunks - 1} were not merged")


def _iso_week(d: date) -> str:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}"


def _icd(disease: str) -> str:
    from phip.synth.tables import table

    return str(table("infectious")["diseases"][disease]["icd10"])


def _manifest(out: Path, plan: Plan, s: Summary, files: Counter[tuple[str, str]]) -> None:
    per_org: dict[str, dict[str, int]] = {}
    for (org, rtype), n in sorted(files.items()):
        per_org.setdefault(org, {})[rtype] = n
    doc: dict[str, Any] = {
        "generator": "phip.synth",
        "format": 1,
        "fhirVersion": "4.0.1",
        "parameters": {
            "persons": plan.persons,
            "seed": plan.seed,
            "province": s.province,
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
            "defects": plan.rates.to_dict(),
        },
        "counts": {
            "residents": s.residents,
            "people": s.people,
            "births": s.births,
            "deaths": s.deaths,
            "moved_out": s.moved_out,
            "in_migrants": s.in_migrants,
            "institutions": s.institutions,
            "practitioners": s.practitioners,
            "resources": s.total_resources,
        },
        "counties": [
            {
                "code": c.code,
                "name": c.address_prefix,
                "urban": c.urban,
                "residents": c.population,
                "townships": [{"code": t.code, "name": t.name, "residents": t.population} for t in c.towns],
            }
            for c in plan.geo.counties
        ],
        "institutions": [
            {
                "id": i.id,
                "name": i.name,
                "kind": i.kind,
                "tier": i.tier,
                "county": i.county,
                "level": i.level,
                "grade": i.grade,
                "beds": i.beds,
                "local_codes": sorted(i.local_codes),
                "resources": per_org.get(i.id, {}),
            }
            for i in plan.registry.by_id.values()
        ],
        "resources": s.resources,
    }
    (out / MANIFEST).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


class _Progress:
    """A Rich progress bar over residents (or nothing when ``enabled`` is false)."""

    def __init__(self, enabled: bool, total: int, chunks: int) -> None:
        self.enabled = enabled
        self._p: Any = None
        self.total = total
        self.chunks = chunks

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._p.start()
            self._task = self._p.add_task(f"synth: {self.chunks} townships", total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def merging(self) -> None:
        if self._p is not None:
            self._p.update(self._task, description="synth: merging shards")

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()


def clear(out: Path) -> None:
    """Remove a previous output folder (used by the CLI's ``--force``)."""
    if out.exists():
        shutil.rmtree(out)
