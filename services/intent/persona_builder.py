"""Builds the persona catalog (``catalogs/personas.yaml``) from curated component lists, reproducibly.

This module owns the persona composition rules. The ingredients are data files under
``catalogs/components/``: industries (organisation types, industry know-how, roles by family),
role families (skill pools and the experience levels a role can hold), naming cultures, cities
(with the cultures common there), communication styles and work-context templates. A seeded
generator combines them: industries, roles, cities and styles are dealt from reshuffled decks so
that every one of them is used before any repeats; the expertise mixes industry know-how with the
role family's skills; names come mostly from the city's cultures and sometimes from anywhere.

Pure and deterministic: the same seed and components give byte-identical YAML. No two personas
share a name (or id), and no two share (role, industry, work_context, communication_style).

    python -m services.intent.persona_builder --seed 0 --count 965 --out services/intent/catalogs/personas.yaml
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CATALOG_DIR = Path(__file__).parent / "catalogs"
COMPONENTS_DIR = CATALOG_DIR / "components"
DEFAULT_OUT = CATALOG_DIR / "personas.yaml"
DEFAULT_SEED = 0
DEFAULT_COUNT = 965
LEVELS = ("Entry-level", "Junior", "Mid-level", "Senior", "Expert", "Executive")
FOREIGN_NAME_SHARE = 0.2  # share of personas named from any culture, not only their city's
EXPERTISE_SIZE = 3
_TRANSLIT = str.maketrans({"ı": "i", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae"})


@dataclass(frozen=True)
class Family:
    levels: tuple[tuple[str, float], ...]
    skills: tuple[str, ...]


@dataclass(frozen=True)
class Industry:
    name: str
    companies: tuple[str, ...]
    expertise: tuple[str, ...]
    roles: tuple[tuple[str, str], ...]  # (title, family)
    only_at: dict[str, tuple[str, ...]]  # title -> the organisation types it exists at (default: all)

    def orgs_for(self, title: str) -> tuple[str, ...]:
        return self.only_at.get(title, self.companies)


@dataclass(frozen=True)
class Culture:
    given: tuple[str, ...]
    family: tuple[str, ...]
    family_first: bool


@dataclass(frozen=True)
class City:
    city: str
    country: str
    region: str
    cultures: tuple[str, ...]


@dataclass(frozen=True)
class Components:
    families: dict[str, Family]
    industries: tuple[Industry, ...]
    cultures: dict[str, Culture]
    cities: tuple[City, ...]
    styles: tuple[str, ...]
    templates: tuple[str, ...]
    sizes: tuple[str, ...]


def _read(directory: Path, name: str) -> Any:
    return yaml.safe_load((directory / name).read_text(encoding="utf-8"))


def load_components(directory: Path = COMPONENTS_DIR) -> Components:
    """Read and cross-check the component files; raise ValueError naming the first problem."""
    families = {
        name: Family(levels=tuple((lvl, float(w)) for lvl, w in spec["levels"].items()), skills=tuple(spec["skills"]))
        for name, spec in _read(directory, "families.yaml").items()
    }
    industries = tuple(
        Industry(
            name=name,
            companies=tuple(spec["companies"]),
            expertise=tuple(spec["expertise"]),
            roles=tuple((title, fam) for fam, titles in spec["roles"].items() for title in titles),
            only_at={title: tuple(orgs) for title, orgs in spec.get("only_at", {}).items()},
        )
        for name, spec in _read(directory, "industries.yaml").items()
    )
    cultures = {
        name: Culture(
            given=tuple(spec["given"]),
            family=tuple(spec["family"]),
            family_first=spec.get("order", "given-first") == "family-first",
        )
        for name, spec in _read(directory, "names.yaml").items()
    }
    cities = tuple(
        City(city=c["city"], country=c["country"], region=region, cultures=tuple(c["cultures"]))
        for region, entries in _read(directory, "places.yaml").items()
        for c in entries
    )
    contexts = _read(directory, "contexts.yaml")
    components = Components(
        families=families,
        industries=industries,
        cultures=cultures,
        cities=cities,
        styles=tuple(_read(directory, "styles.yaml")),
        templates=tuple(contexts["templates"]),
        sizes=tuple(contexts["sizes"]),
    )
    _check(components)
    return components


def _check(c: Components) -> None:
    for name, fam in c.families.items():
        unknown = {lvl for lvl, _ in fam.levels} - set(LEVELS)
        if unknown or len(fam.skills) < EXPERTISE_SIZE:
            raise ValueError(f"family {name}: unknown levels {sorted(unknown)} or too few skills")
    for ind in c.industries:
        unknown = {fam for _, fam in ind.roles} - set(c.families)
        if unknown or not ind.companies or len(ind.expertise) < 2 or not ind.roles:
            raise ValueError(f"industry {ind.name}: unknown families {sorted(unknown)} or an empty list")
        titles = {title for title, _ in ind.roles}
        for title, orgs in ind.only_at.items():
            if title not in titles or not orgs or set(orgs) - set(ind.companies):
                raise ValueError(f"industry {ind.name}: only_at {title!r} names an unknown role or organisation type")
    for city in c.cities:
        if not city.cultures or set(city.cultures) - set(c.cultures):
            raise ValueError(
                f"city {city.city}: no cultures or unknown ones {sorted(set(city.cultures) - set(c.cultures))}"
            )
    for label, items in (
        ("style", c.styles),
        ("city", [x.city for x in c.cities]),
        ("industry", [i.name for i in c.industries]),
    ):
        if len(set(items)) != len(items):
            raise ValueError(f"duplicate {label} in components")


def slug(text: str) -> str:
    """ASCII kebab-case of a name: 'Ayşe Yılmaz' -> 'ayse-yilmaz'."""
    ascii_text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def with_article(phrase: str) -> str:
    """'a freight forwarder', 'an oilfield services contractor', 'a university', 'an HR software provider'."""
    first = phrase.split()[0]
    if len(first) > 1 and first.isupper():  # an acronym is read letter by letter: "an LNG", "a CRM"
        return f"{'an' if first[0] in 'AEFHILMNORSX' else 'a'} {phrase}"
    word = first.lower()
    vowel = word[0] in "aeiou" and not word.startswith(("uni", "use", "usu", "eu", "one"))
    return f"{'an' if vowel or word.startswith(('hour', 'honest')) else 'a'} {phrase}"


class _Deck:
    """Deals items in a shuffled order and reshuffles when it runs out (even coverage)."""

    def __init__(self, items: tuple[Any, ...] | list[Any], rng: random.Random) -> None:
        self._items, self._rng = list(items), rng
        self._pile: list[Any] = []

    def draw(self) -> Any:
        if not self._pile:
            self._pile = self._items[:]
            self._rng.shuffle(self._pile)
        return self._pile.pop()


def _work_context(rng: random.Random, orgs: tuple[str, ...], city: City, c: Components) -> str:
    org = rng.choice(orgs)
    template = rng.choice(c.templates)
    if city.city == city.country:
        template = template.replace(", {country}", "")
    return template.format(
        org=with_article(org),
        size_org=with_article(f"{rng.choice(c.sizes)} {org}"),
        city=city.city,
        country=city.country,
    )


def _name(rng: random.Random, city: City, c: Components) -> str:
    pool = city.cultures if rng.random() >= FOREIGN_NAME_SHARE else tuple(c.cultures)
    culture = c.cultures[rng.choice(pool)]
    given, family = rng.choice(culture.given), rng.choice(culture.family)
    return f"{family} {given}" if culture.family_first else f"{given} {family}"


def _expertise(rng: random.Random, industry: Industry, family: Family) -> list[str]:
    from_industry = rng.sample(industry.expertise, rng.choices((1, 2), weights=(3, 2), k=1)[0])
    taken = {s.lower() for s in from_industry}
    skills = [s for s in family.skills if s.lower() not in taken]
    return from_industry + rng.sample(skills, EXPERTISE_SIZE - len(from_industry))


def build_personas(
    components: Components, *, seed: int = DEFAULT_SEED, count: int = DEFAULT_COUNT
) -> list[dict[str, Any]]:
    """``count`` distinct personas from ``components``; the same seed gives the same list."""
    rng = random.Random(seed)
    industries = _Deck(components.industries, rng)
    roles = {ind.name: _Deck(ind.roles, rng) for ind in components.industries}
    cities, styles = _Deck(components.cities, rng), _Deck(components.styles, rng)
    personas: list[dict[str, Any]] = []
    slugs: set[str] = set()  # unique slugs imply unique names and ids
    tuples: set[tuple[str, str, str, str]] = set()
    attempts = 0
    while len(personas) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"could not compose {count} distinct personas; the components are too small")
        industry = industries.draw()
        title, family_name = roles[industry.name].draw()
        family = components.families[family_name]
        city, style = cities.draw(), styles.draw()
        context = _work_context(rng, industry.orgs_for(title), city, components)
        key = (title, industry.name, context, style)
        name = _name(rng, city, components)
        for _ in range(20):  # a taken name is redrawn; the rest of the persona stands
            if slug(name) not in slugs:
                break
            name = _name(rng, city, components)
        if key in tuples or slug(name) in slugs:
            continue
        slugs.add(slug(name))
        tuples.add(key)
        levels, weights = zip(*family.levels, strict=True)
        personas.append(
            {
                "id": f"p-{slug(name)}",
                "name": name,
                "role": title,
                "industry": industry.name,
                "expertise": _expertise(rng, industry, family),
                "experience_level": rng.choices(levels, weights=weights, k=1)[0],
                "communication_style": style,
                "work_context": context,
            }
        )
    return personas


def render_yaml(personas: list[dict[str, Any]], *, seed: int, count: int) -> str:
    """One flow mapping per line, behind a header that says how the file was made."""
    roles = {p["role"] for p in personas}
    header = [
        f"# Generated by `python -m services.intent.persona_builder --seed {seed} --count {count}` from",
        "# services/intent/catalogs/components/. Edit the components and regenerate; do not edit this file.",
        (
            f"# {len(personas)} personas, {len({p['industry'] for p in personas})} industries, {len(roles)} roles, "
            f"{len({p['experience_level'] for p in personas})} experience levels, "
            f"{len({p['communication_style'] for p in personas})} communication styles."
        ),
    ]
    lines = [
        "- " + yaml.safe_dump(p, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1 << 20).strip()
        for p in personas
    ]
    return "\n".join(header + lines) + "\n"


def build_text(*, seed: int = DEFAULT_SEED, count: int = DEFAULT_COUNT, components_dir: Path = COMPONENTS_DIR) -> str:
    """The full personas.yaml text for ``seed`` and ``count``."""
    return render_yaml(build_personas(load_components(components_dir), seed=seed, count=count), seed=seed, count=count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.intent.persona_builder",
        description="Compose the persona catalog from the component lists (same seed -> identical file).",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="personas to compose (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output YAML file, '-' for stdout (default: the catalog)"
    )
    parser.add_argument("--components", type=Path, default=COMPONENTS_DIR, help="directory of component lists")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if --out differs from the output")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    started = time.perf_counter()
    try:
        text = build_text(seed=args.seed, count=args.count, components_dir=args.components)
    except (ValueError, OSError, KeyError) as exc:
        print(f"persona_builder: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    if str(args.out) == "-":
        sys.stdout.write(text)
        return 0
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the builder output'}", file=sys.stderr)
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(
        f"wrote {args.out} ({len(text.encode())} bytes) in {elapsed:.2f}s; {text.splitlines()[2][2:]}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
