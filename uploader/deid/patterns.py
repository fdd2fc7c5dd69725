"""Pattern detectors: what a de-identified header may not hold in free text, whoever it names.

The study's own identifiers (``identifiers.py``) find what the input is known to carry; these
find what no header may carry at all: dates in the forms people write them, phone numbers,
postcodes, e-mail addresses, NHS numbers (with their checksum), ID-like tokens and person-name
forms. The table is data (``data/patterns.json``, documented in docs/deidentification.md); a site
adds its own with a file of the same shape. Both the cleaner (identifiable node) and the
knowledge-free verifier (anonymised node) use it, so they agree on what counts.

A row whose regex has a group named ``value`` finds only that group (a label such as
"MRN:" stays, the number after it goes), and its check judges that group (with the text that
follows it); the group may sit in a lookahead, so that candidates overlap ("Head Neck Sarah
Connolly" is tried at every word). The person-name checks without a title are in
``names.py``; the rows whose check needs a given name are run only on text holding one (a
gate), so a description without one costs a set look-up more than before. Matching runs on
text folded to lower case without accents (same length as the original, so spans index the
original); an entry with ``"case": "sensitive"`` runs on the original text. Every match is
bounded: text longer than ``MAX_TEXT`` is judged in windows, so no value makes a pattern run
for long. Nothing here returns a matched value: only its kind and where.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from uploader.datafiles import packaged_json
from uploader.deid import names
from uploader.deid.profile import Option
from uploader.errors import ConfigError

MAX_TEXT = 16_384  # longer text is matched in overlapping windows of this size
_OVERLAP = 128


def nhs_checksum(digits: str) -> bool:
    """True if ten digits (separators ignored) carry a valid NHS number check digit (mod 11)."""
    d = [int(c) for c in digits if c.isdigit()]
    if len(d) != 10:
        return False
    total = sum(v * w for v, w in zip(d[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == d[9]


def day_month(text: str) -> bool:
    """True if ``d.m.y`` / ``m/d/y`` text can be a calendar date (not a version like 1.5.20)."""
    parts = re.split(r"[-/.]", text)
    if len(parts) != 3:
        return False
    a, b, year = parts
    if "." in text and len(year) == 2 and (len(a) != 2 or len(b) != 2):
        return False  # "1.5.20" is a version number far more often than a date
    x, y = int(a), int(b)
    return (1 <= x <= 31 and 1 <= y <= 12) or (1 <= x <= 12 and 1 <= y <= 31)


def not_a_run(text: str) -> bool:
    """True unless digit pairs only count up or repeat (05 06 07 08 09: phases, not a phone),
    step evenly (05 10 15 20 25, 06 12 18 24 30: a list of doses or angles) or alternate (02 00
    02 00 02, 05 40 05 40 05: a repeated schedule)."""
    pairs = [int(x) for x in re.findall(r"[0-9]{2}", text)]
    steps = {b - a for a, b in itertools.pairwise(pairs)}
    alternates = all(a == b for a, b in zip(pairs, pairs[2:], strict=False))
    return not (steps <= {0, 1} or len(steps) == 1 or alternates)


#: The kinds ``Detector.people`` keeps.
_PEOPLE = frozenset({"person name", "e-mail address"})
#: The kind of the rows that find institutions' names (not applied under Retain Institution
#: Identity).
INSTITUTION = "institution"


def _nhs_check(value: str, _after: str) -> bool:
    return nhs_checksum(value)


def _date_check(value: str, _after: str) -> bool:
    return day_month(value)


def _run_check(value: str, _after: str) -> bool:
    return not_a_run(value)


def _named_hospital(value: str, _after: str) -> bool:
    """The word after Hospital is a name: no ordinary word (Number, Admission), vocabulary or
    generic word (Inpatient, Referral, Pacs, Infantil)."""
    generic = any(k in _GENERIC_INSTITUTION for k in names.word_keys(value))
    return not (generic or names.ordinary(value) or names.vocabulary_word(value))


#: Words that say which hospital only relative to the writer (Outside Hospital, Referring
#: Hospital, Day Hospital) or say what kind it is (General Hospital, Hôpital de Jour, Clínica
#: Dental, Radiologische Klinik), and the words of the head itself: a hospital's name needs a
#: word that is none of them (Royal Marsden Hospital, Ospedale Maggiore, Holzapfel-Klinik).
_GENERIC_WORDS = """
    other outside external referring referral previous prior local home host treating base
    private teaching district general community day field planning from scan scans images
    image transfer import imported dicom ct mr mri pet the this another different original
    old new same academic sending receiving partner main university universitario universitaria
    universitari universitaire universitair children childrens women womens kids of and for
    hospital hospitals infirmary medical college cancer institute health healthcare centre
    center system trust board nhs foundation hopital klinikum universitatsklinikum
    universitaetsklinikum krankenhaus clinica ospedale policlinico azienda ospedaliera
    ziekenhuis centre hospitalier regional chu chru klinik kliniken spital sjukhus sykehus
    sygehus medisch centrum de del la los di della du des van der den von do da dos d
    infantil provincial comarcal dia jour dental medica civile pediatrico pediatrica
    aufnahme planung planungs academisch algemeen tumor brust kopf hals frauen kinder augen
    haut tages uni oncologico oncologica oncologia oncologie inpatient outpatient inpatients
    outpatients referral referrals pacs ris dicom zugang"""
_GENERIC_INSTITUTION = frozenset(_GENERIC_WORDS.split())
#: German and Dutch department words by their endings (Radiologische, Strahlentherapie).
_DEPARTMENT = re.compile(r"(?:isch|ische[nrs]?|logie|therapie|medizin|chirurgie|iatrie)$")


def _named_institution(value: str, _after: str) -> bool:
    """A hospital's name holds a word that is not generic (Royal Marsden Hospital; not Outside
    Hospital, District General Hospital, Hôpital de Jour, Radiologische Klinik)."""
    for token in names.word_keys(value.replace("-", " ")):  # Brust-Klinik: brust, klinik
        if token not in _GENERIC_INSTITUTION and not _DEPARTMENT.search(token):
            return True
    return False


#: Country endings that are also file types (setup.in, model.pt, run.pl, build.info).
_FILE_ENDINGS = frozenset({"in", "pt", "pl", "info"})


def _domain_name(value: str, _after: str) -> bool:
    """A bare domain of one word and its ending is a file name when the word is an ordinary
    or vocabulary one (plan.co, model.pt, config.in, dose.io; not blondel.com, charite.de)."""
    host = value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    labels = host.split(".")
    if len(labels) != 2 or host != value:
        return True
    if labels[1] in _FILE_ENDINGS:
        return False
    return not (names.ordinary(labels[0]) or names.vocabulary_word(labels[0]))


#: A check judges a match (its ``value`` group, else the whole match) and the text after it;
#: module functions, so that a detector goes to worker processes by pickle.
Check = Callable[[str, str], bool]
CHECKS: dict[str, Check] = {
    "nhs_checksum": _nhs_check,
    "day_month": _date_check,
    "not_a_run": _run_check,
    "named_hospital": _named_hospital,
    "named_institution": _named_institution,
    "domain_name": _domain_name,
    "given_surname": names.given_surname,
    "surname_comma_given": names.surname_comma_given,
    "initial_surname": names.initial_surname,
    "surname_initial": names.surname_initial,
    "lower_given_surname": names.lower_given_surname,
    "after_by": names.after_by,
    "after_cue": names.after_cue,
    "after_kin": names.after_kin,
    "glued_initial": names.glued_initial,
    "after_title": names.after_title,
    "dicom_name": names.dicom_name,
}
_AFTER = 48  # how much of the text after a match a check sees
#: A gate finds, in folded text, where a row whose check needs a word of a list may start:
#: such a row runs only on text where its gate found a place, and is left out of the
#: one-search union.
Gate = Callable[[str], tuple[int, ...]]
GATES: dict[str, Gate] = {
    "given_surname": names.given_at,
    "surname_comma_given": names.given_at,
    "lower_given_surname": names.given_at,
}
#: Rows tried only where their gate points (the given name starts them), not at every place.
ANCHORED = frozenset({"given_surname", "lower_given_surname"})


@dataclass(frozen=True)
class Pattern:
    """One row of the table."""

    kind: str
    name: str
    regex: re.Pattern[str]
    check: Check | None
    gate: Gate | None
    anchored: bool
    sensitive: bool
    clean: bool
    audit: bool


@dataclass(frozen=True)
class Finding:
    """One match: where in the text and of what kind (never the matched value)."""

    start: int
    end: int
    kind: str


def _rows(data: Any, origin: str) -> list[Pattern]:
    if not isinstance(data, dict) or not isinstance(data.get("patterns"), list):
        raise ConfigError(f"{origin}: a pattern table is an object with a 'patterns' list")
    out = []
    for i, row in enumerate(data["patterns"]):
        where = f"{origin}: pattern {i + 1}"
        if not isinstance(row, dict) or not isinstance(row.get("regex"), str):
            raise ConfigError(f"{where}: each pattern needs 'kind' and 'regex'")
        kind = str(row.get("kind") or "")
        if not kind:
            raise ConfigError(f"{where}: 'kind' is missing")
        check_name = row.get("check")
        if check_name is not None and check_name not in CHECKS:
            raise ConfigError(f"{where}: unknown check {check_name!r} (use {', '.join(CHECKS)})")
        sensitive = row.get("case") == "sensitive"
        try:
            regex = re.compile(row["regex"], 0 if sensitive else re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"{where}: the regex does not compile: {exc}") from exc
        out.append(
            Pattern(
                kind=kind,
                name=str(row.get("name") or kind),
                regex=regex,
                check=CHECKS[check_name] if check_name else None,
                gate=GATES.get(check_name) if check_name else None,
                anchored=check_name in ANCHORED,
                sensitive=sensitive,
                clean=bool(row.get("clean", True)),
                audit=bool(row.get("audit", True)),
            )
        )
    return out


@cache
def _packaged() -> tuple[Pattern, ...]:
    table = packaged_json("uploader.deid", "data/patterns.json", "pattern table")
    return tuple(_rows(table, "the packaged pattern table"))


def load_site_patterns(path: Path) -> tuple[Pattern, ...]:
    """Read a site's extra pattern table (same shape as the packaged one).

    Raises:
        ConfigError: unreadable, not JSON/YAML of the right shape, or a regex that does not compile.
    """
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pattern table: {exc.strerror}") from exc
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(
            f"{path}: not a JSON or YAML pattern table: {type(exc).__name__}"
        ) from exc
    return tuple(_rows(data, str(path)))


class Detector:
    """The pattern table compiled for one use (cleaning or audit)."""

    def __init__(self, extra: Iterable[Pattern] = (), *, audit: bool = False) -> None:
        rows = [*_packaged(), *extra]
        self._use([p for p in rows if (p.audit if audit else p.clean)])
        self._people: Detector | None = None
        self._no_institutions: Detector | None = None

    def _use(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns
        # one alternation of all rows: most text holds nothing, and is passed in one search
        plain = [p for p in self.patterns if p.gate is None]
        self._any = _union([p for p in plain if not p.sensitive], re.IGNORECASE)
        self._any_sensitive = _union([p for p in plain if p.sensitive], 0)
        self._gated = [p for p in self.patterns if p.gate is not None]

    def people(self) -> Detector:
        """The rows that find people (person names and e-mail addresses), for device
        descriptions: a model name or a software version is not searched for dates or
        numbers (a version looks like a date, a serial like an ID), but a service engineer's
        name typed into one is still a name. The same object on every call."""
        if self._people is None:
            self._people = self._subset(lambda p: p.kind in _PEOPLE)
            self._people._people = self._people
        return self._people

    def for_options(self, options: frozenset[Option]) -> Detector:
        """The rows these de-identification options apply: under Retain Institution Identity,
        none that finds an institution (the option keeps the hospital's name, in its
        attributes and in text). The same object on every call."""
        if Option.RETAIN_INSTITUTION_IDENTITY not in options:
            return self
        if self._no_institutions is None:
            self._no_institutions = self._subset(lambda p: p.kind != INSTITUTION)
            self._no_institutions._no_institutions = self._no_institutions
        return self._no_institutions

    def _subset(self, keep: Callable[[Pattern], bool]) -> Detector:
        sub = Detector.__new__(Detector)
        sub._use([p for p in self.patterns if keep(p)])
        sub._people = sub._no_institutions = None
        return sub

    def any_in(self, text: str, folded: str) -> bool:
        """True if some row may match (a quick pass before ``find``; checks not applied)."""
        if len(text) > MAX_TEXT:
            return True
        hit = self._any is not None and self._any.search(folded) is not None
        if hit or (self._any_sensitive is not None and self._any_sensitive.search(text)):
            return True
        places = self._gate_places(folded)
        return any(
            places[p.gate] and p.regex.search(text if p.sensitive else folded)
            for p in self._gated
            if p.gate is not None
        )

    def _gate_places(self, folded: str) -> dict[Gate, tuple[int, ...]]:
        return {g: g(folded) for g in {p.gate for p in self._gated if p.gate is not None}}

    def find(self, text: str, folded: str) -> Iterator[Finding]:
        """Yield every finding in ``text`` (``folded``: the same text folded, same length).

        Only the rows of a group that may match are run: the folded rows when their union
        matched, the case-sensitive ones when theirs did, a gated row where its gate points."""
        whole = len(text) > MAX_TEXT  # judged in windows, every row everywhere
        if whole:
            plain = sensitive = True
            places: dict[Gate, tuple[int, ...]] = {}
        else:
            plain = self._any is not None and self._any.search(folded) is not None
            sensitive = self._any_sensitive is not None and bool(self._any_sensitive.search(text))
            places = self._gate_places(folded)
            if not (plain or sensitive or any(places.values())):
                return
        for start in range(0, max(len(text), 1), MAX_TEXT - _OVERLAP):
            end = min(start + MAX_TEXT, len(text))
            for p in self.patterns:
                at = places.get(p.gate) if p.gate is not None and not whole else None
                if at == () or (p.gate is None and not (sensitive if p.sensitive else plain)):
                    continue
                yield from _findings(p, text if p.sensitive else folded, start, end, at)
            if end >= len(text):
                break

    def kinds(self, text: str, folded: str) -> list[str]:
        """Return the kinds found in ``text``, each once, in table order."""
        return list(dict.fromkeys(f.kind for f in self.find(text, folded)))


def _findings(
    p: Pattern, subject: str, start: int, end: int, at: tuple[int, ...] | None
) -> Iterator[Finding]:
    """One row's findings in ``subject[start:end]``; an anchored row only where ``at`` points."""
    if p.anchored and at is not None:
        matches: Iterable[re.Match[str] | None] = (p.regex.match(subject, i) for i in at)
    else:
        matches = p.regex.finditer(subject, start, end)
    part = "value" if "value" in p.regex.groupindex else 0
    for m in matches:
        if m is None:
            continue
        if p.check is None or p.check(m.group(part), subject[m.end(part) : m.end(part) + _AFTER]):
            yield Finding(m.start(part), m.end(part), p.kind)


_NAMED = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")  # a named group, as a plain one in the union


def _union(rows: list[Pattern], flags: int) -> re.Pattern[str] | None:
    if not rows:
        return None
    try:
        return re.compile(
            "|".join(f"(?:{_NAMED.sub('(?:', p.regex.pattern)})" for p in rows), flags
        )
    except re.error:  # a site's named groups clash when joined: every text takes the long way
        return re.compile("")


@cache
def default_detector(audit: bool = False) -> Detector:
    """Return the packaged table compiled once per process."""
    return Detector(audit=audit)
