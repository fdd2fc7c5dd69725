"""Measure how much planted PHI `uploader anonymise` lets through and how much useful text it keeps.

An approximation of a held-out de-identification corpus (in the spirit of TCIA's MIDI-B): Faker
writes synthetic identities in several locales (patients, staff, institutions, addresses, phone
numbers, e-mails, dates in many written forms, MRNs, accession and national numbers, URLs, ages
over 89), which are planted into copies of real files (pydicom's bundled test files, our sample
RT study, dicompyler-core's TPS exports when cached) both where the patient and staff modules put
them and inside the free text a site types (descriptions, comments, request items, RT labels and
ROI names, SR text, private tags). Some values are also in the study's headers, some only typed in
text. Useful non-PHI text (ordinary descriptions, TG-263 ROI names, protocol names) is planted
alongside.

The planted tree is de-identified under (a) the Basic Profile and (b) a protocol's clean options
(--protocol, default protocols/example-head-neck-imrt.yaml, --site RXH). An unplanted control run
under each setting gives the background: a needle found there is coincidental and not counted.

A planted value leaks when any of its tokens (a name part, a street or city word, a postcode, a
number's long digit group, a date's written form, an e-mail's local part, a URL's host word)
survives, case-insensitive and accent-folded, anywhere in the case's output bytes, decoded element
values or paths. Per attribute, an instance leaks when its token is still in that attribute of its
own output file (or, for a value typed only there, anywhere). Useful text survives when it is
still in its attribute of its output file exactly as planted (under (b) only).

Prints figures, no pass/fail. Every value is synthetic, so examples are printed as they are.

Usage: python bench/deid_recall.py [--cases 27] [--seed 7] [--examples 20] [--keep DIR]
Needs: faker (pip install faker).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402
from faker import Faker  # noqa: E402
from pydicom._uid_dict import UID_dictionary  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402

from uploader.sample import Patient, write_study  # noqa: E402

LOCALES = ["en_GB", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_IN", "zh_CN"]
PYDICOM_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "JPEG2000.dcm",
    "liver_1frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "image_dfl.dcm",
    "waveform_ecg.dcm",
]
DICOMPYLER = Path("/root/.cache/sdu-testdata/dicompyler-core-0.5.6/tests/testdata/example_data")
DICOMPYLER_FILES = ["ct.0.dcm", "rtss.dcm", "rtplan.dcm"]  # rtdose.dcm is 10 MB: left out
MAX_LEN = {"SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UT": 100000, "CS": 16}

# --- folding and tokens ------------------------------------------------------------------------

_FOLD = str.maketrans(
    {
        "ß": "ss",
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "\u0131": "i",  # dotless i
        "\u2019": "'",
        "\u2018": "'",
    }
)


def fold(text: str) -> str:
    """Lower case, accents dropped (Müller -> muller, ß -> ss); what is not Latin goes."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return text.encode("ascii", "ignore").decode("ascii").lower()


_GERMAN = {ord(k): v for k, v in zip("üöäÜÖÄ", ["ue", "oe", "ae", "Ue", "Oe", "Ae"], strict=True)}


def german(text: str) -> str:
    """The other common spelling of umlauts (Müller -> Mueller)."""
    return text.translate(_GERMAN)


GENERIC = set(
    """street st road rd avenue ave lane ln drive dr close way place pl court ct crescent square
    gardens park grove terrace row walk view mews rise vale boulevard blvd suite apt apartment
    unit flat floor po box strasse str weg platz gasse allee ring rue chemin impasse route quai
    cours calle avenida plaza paseo camino ronda carrer via viale piazza corso vicolo largo
    contrada borgo straat laan plein gracht kade singel nagar marg chowk colony circle north south
    east west new old upper lower saint san santa ste de del la le les des du di da van der den
    het von am an im the of and y e et und en on in at to for hospital general university
    universitario universitaire universitatsklinikum klinikum klinik clinic clinica hopital
    hospitalier centre center centro centrum medical medisch ziekenhuis ospedale policlinico
    azienda ospedaliera royal nhs trust foundation institute instituto istituto institut cancer
    oncology radiotherapy health care college memorial regional district county community children
    infirmary people's peoples gmbh sa sarl spa srl bv nv ltd plc inc llc group sons co kg ag fils
    chu aiims www http https com org net gov edu html php htm index co uk de fr es it nl in cn
    info biz gmail yahoo hotmail outlook gmx web free orange wanadoo libero tiscali laposte ziggo
    kpn xs4all telefonica terra live aol mail email example mr mrs ms miss dr prof herr frau mme
    mlle sr sra srta dott dhr mevr shri smt jr phd md ii iii iv m pr ing dipl bsc msc mba
    univ""".split()  # noqa: SIM905 - a word list
)
TITLES = {
    "dr",
    "mr",
    "mrs",
    "ms",
    "miss",
    "prof",
    "herr",
    "frau",
    "mme",
    "mlle",
    "sr",
    "sra",
    "dott",
    "dhr",
    "mevr",
    "shri",
    "smt",
    "m",
    "med",
    "pr",
    "dra",
    "ssa",
    "sig",
    "drs",
}


def words(text: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z']+", fold(text)) if w]


def name_tokens(part: str) -> list[str]:
    """A name part's tokens: O'Neill -> oneill, neill; Smith-Jones -> smith, jones."""
    out: list[str] = []
    for w in re.split(r"[\s\-]+", part):
        f = fold(w).strip(".'")
        if (
            not f
            or f in TITLES
            or f
            in {
                "von",
                "van",
                "de",
                "der",
                "den",
                "la",
                "le",
                "di",
                "da",
                "del",
                "du",
                "des",
                "ter",
                "ten",
                "y",
                "zu",
                "het",
            }
        ):
            continue
        if "'" in f:
            out.extend(t for t in f.split("'") if len(t) >= 2)
            f = f.replace("'", "")
        if len(f) >= 2:
            out.append(f)
        g = fold(german(w)).strip(".'").replace("'", "")
        if g != f and len(g) >= 2:
            out.append(g)
    return out


def digit_needles(text: str) -> list[str]:
    """Long digit groups: 5+ digits, or 4 that are not a year (years are everywhere)."""
    out = []
    for g in re.findall(r"\d+", text):
        if len(g) >= 5 or (len(g) == 4 and not 1900 <= int(g) <= 2039):
            out.append(g)
    return out


def loose_tokens(text: str) -> list[str]:
    """Address / institution / host words: not generic words, not short numbers."""
    out = []
    for word in words(text):
        w = word.strip("'")
        if w in GENERIC or len(w) < 3:
            continue
        if w.isdigit():
            out.extend(digit_needles(w))
        else:
            out.append(w.replace("'", ""))
    return out


def needle_regex(needle: str) -> re.Pattern[str]:
    if needle.isdigit():
        return re.compile(rf"(?<!\d){re.escape(needle)}(?!\d)")
    if needle.isalpha():
        return re.compile(rf"(?<![a-z]){re.escape(needle)}(?![a-z])")
    return re.compile(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])")


def spaced(text: str) -> str:
    return re.sub(r"\s+", " ", fold(text)).strip()


# --- planted values ----------------------------------------------------------------------------


@dataclass
class Value:
    """One PHI value as written in one place: its kind, form, the tokens that betray it."""

    kind: str
    form: str
    needles: tuple[str, ...]
    value_id: str  # same for every form of one real value (a case's patient surname, say)
    in_headers: bool


@dataclass
class Plant:
    case: int
    file: str  # input path relative to the case folder
    attr: str  # where: keyword path, e.g. RequestAttributesSequence>ReasonForTheRequestedProcedure
    tag: int  # the leaf tag (what is looked up in the output)
    text: str  # the whole element value as planted
    value: Value


@dataclass
class Useful:
    case: int
    file: str
    attr: str
    tag: int
    text: str
    beside_phi: bool = False  # typed in the same value as a planted identifier


@dataclass
class Person:
    first: str
    last: str


MONTHS = {
    "en": "January February March April May June July August September October November December",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre "
    "diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
}


def date_forms(d: date, lang: str) -> list[str]:
    en = MONTHS["en"].split()[d.month - 1]
    local = MONTHS.get(lang, MONTHS["en"]).split()[d.month - 1]
    sfx = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}.get(d.day, "th")
    return [
        f"{d.day:02d}/{d.month:02d}/{d.year}",
        f"{d.month:02d}/{d.day:02d}/{d.year}",
        f"{d.month}/{d.day}/{d.year % 100:02d}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{d.day}.{d.month}.{d.year % 100:02d}",
        f"{d.year}-{d.month:02d}-{d.day:02d}",
        f"{d.year}{d.month:02d}{d.day:02d}",
        f"{d.day:02d}-{en[:3].upper()}-{d.year}",
        f"{d.day}{en[:3].upper()}{d.year}",
        f"{d.day} {en} {d.year}",
        f"{en} {d.day}, {d.year}",
        f"{en[:3]} {d.day} {d.year}",
        f"{d.day}{sfx} of {en} {d.year}",
        f"{d.day}{sfx} {en[:3]} {d.year % 100:02d}",
        f"{d.day}. {local} {d.year}" if lang in ("de", "nl") else f"{d.day} {local} {d.year}",
        f"{d.day} de {local} de {d.year}" if lang == "es" else f"{d.day} {local} {d.year}",
    ]


def date_needles(form: str) -> tuple[str, ...]:
    """The form itself, and the form without its year when day and month are left."""
    f = spaced(form)
    out = [f]
    no_year = re.sub(r"[\s,./\-]*(?:of\s+)?\d{4}$", "", f).strip(" ,.")
    no_year = re.sub(r"^\d{4}[\-./]", "", no_year)
    if no_year != f and re.search(r"\d", no_year) and len(no_year) >= 4:
        out.append(no_year)
    if re.fullmatch(r"\d{8}", f):
        out = [f]
    return tuple(out)


class Identity:
    """One case: a patient, the staff and the hospital, in one locale."""

    def __init__(self, case: int, locale: str, seed: int) -> None:
        self.case, self.locale = case, locale
        self.lang = locale[:2]
        self.rng = random.Random(f"{seed}-{case}")
        self.fake = Faker(locale)
        self.fake.seed_instance(seed * 1000 + case)
        self.other = Faker("en_US") if locale == "zh_CN" else self.fake
        if locale == "zh_CN":
            self.other.seed_instance(seed * 1000 + case + 500)
        self.used: set[str] = set()
        self.patient = self.person()
        self.birth_surname = self.person().last
        self.mother = self.person().last
        self.staff = {
            role: self.person()
            for role in (
                "referring",
                "operator",
                "performing",
                "reading",
                "contourer",
                "reviewer",
                "requesting",
                "physicist",
            )
        }
        self.birth = self.fake.date_of_birth(minimum_age=25, maximum_age=88)
        self.study = self.fake.date_between(date(2015, 1, 1), date(2025, 12, 31))
        self.mrn = self.rng.choice(["", "H", "RXH", "M"]) + str(self.rng.randint(100000, 99999999))
        self.accession = self.rng.choice(["ACC", "A", "RX", ""]) + str(
            self.rng.randint(10**6, 10**9)
        )
        self.national = self.national_id()
        self.phone = self.unique(self.fake.phone_number)
        self.address = self.make_address()
        self.institution = self.make_institution()
        self.station = f"{fold(self.address[1])[:4].upper()}CT{self.rng.randint(1, 9)}".replace(
            " ", ""
        )
        self.age_over_89 = self.rng.randint(91, 104) if self.rng.random() < 0.3 else 0

    # each token is used by one value of a case only, so a survivor names its value
    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(50):
            v = make()
            toks = set(words(v)) - GENERIC
            if not toks & self.used:
                self.used |= toks
                return v
        return v

    def person(self) -> Person:
        for _ in range(50):
            if self.locale == "zh_CN":
                p = Person(self.fake.first_romanized_name(), self.fake.last_romanized_name())
            else:
                p = Person(self.fake.first_name(), self.fake.last_name())
            toks = set(name_tokens(p.first)) | set(name_tokens(p.last))
            if toks and not toks & self.used and not toks & USEFUL_WORDS:
                self.used |= toks
                return p
        return p

    def national_id(self) -> str:
        if self.locale == "en_GB":
            digits = [self.rng.randint(0, 9) for _ in range(9)]
            check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
            if check == 11:
                check = 0
            if check == 10:
                digits[0] = (digits[0] + 1) % 10
                return self.national_id()
            n = "".join(map(str, digits)) + str(check)
            return f"{n[:3]} {n[3:6]} {n[6:]}"
        if self.locale == "en_IN":
            return self.fake.aadhaar_id()
        try:
            return str(self.fake.ssn())
        except AttributeError:
            return str(self.rng.randint(10**8, 10**9))

    def make_address(self) -> tuple[str, str, str]:
        f = self.other
        for _ in range(50):
            street, city, post = f.street_address(), f.city(), f.postcode()
            toks = set(loose_tokens(f"{street} {city} {post}"))
            if toks and not toks & self.used:
                self.used |= toks
                return street.replace("\n", ", "), city, post
        return street, city, post

    def make_institution(self, city: str = "") -> str:
        """A hospital of the case's city (or of ``city``: one typed only in text)."""
        city = city or self.address[1]
        last = self.person().last
        first = self.person().first
        choices = {
            "en_GB": [
                f"{city} General Hospital",
                f"St {first}'s Hospital",
                f"{city} NHS Foundation Trust",
                f"Royal {city} Infirmary",
            ],
            "en_US": [
                f"{city} Medical Center",
                f"{last} Memorial Hospital",
                f"University of {city} Hospital",
            ],
            "de_DE": [f"Klinikum {city}", f"Universitätsklinikum {city}", f"{last}-Klinik"],
            "fr_FR": [f"Hôpital {last}", f"CHU de {city}", f"Centre Hospitalier de {city}"],
            "es_ES": [f"Hospital Universitario {city}", f"Hospital {last}", f"Clínica {last}"],
            "it_IT": [f"Ospedale {last}", f"Policlinico {city}", f"Azienda Ospedaliera {city}"],
            "nl_NL": [f"{city} Medisch Centrum", f"Ziekenhuis {city}", f"{last} Ziekenhuis"],
            "en_IN": [f"{last} Hospital", f"{city} Medical College", f"AIIMS {city}"],
            "zh_CN": [f"{last} People's Hospital", f"{city} Cancer Hospital"],
        }[self.locale]
        return self.rng.choice(choices)

    # --- forms: (form, needles) --------------------------------------------------------------

    def name_form(
        self, p: Person, *, dicom: bool = False, title: bool = False
    ) -> tuple[str, list[str]]:
        first, last = p.first, p.last
        lt, ft = name_tokens(last), name_tokens(first)
        if dicom:
            return f"{last.upper()}^{first.upper()}", lt + ft
        local = {
            "de": ["Dr. med.", "Prof. Dr.", "Herr", "Frau"],
            "fr": ["Pr", "Mme", "M."],
            "es": ["Dra.", "Sr.", "Sra."],
            "it": ["Dott.", "Dott.ssa", "Sig."],
            "nl": ["Dhr.", "Mevr.", "drs."],
        }.get(self.lang, [])
        t = (
            self.rng.choice(["Dr", "Dr.", "DR", "dr", "Prof", "Mr.", "Mrs", "Ms.", *local]) + " "
            if title
            else ""
        )
        forms = [
            (f"{t}{first} {last}", lt + ft),
            (f"{t}{last}", lt),
            (f"{t}{first[0]}. {last}", lt),
            (f"{t}{last.upper()}", lt),
            (f"{last}, {first}", lt + ft),
            (f"{last.upper()} {first[0]}", lt),
            (f"{first.lower()} {last.lower()}", lt + ft),
            (f"{last.upper()}^{first.upper()}", lt + ft),
            (f"{first[0]}{last}", [fold(first[0]) + t_ for t_ in lt]),
            (f"{last}_{first}", lt + ft),
            (f"{t}{first} {last.upper()}", lt + ft),
        ]
        return self.rng.choice(forms)


USEFUL: dict[str, list[str]] = {
    "SeriesDescription": [
        "CT THORAX 2.5mm",
        "AX T1 POST GAD",
        "Head Neck 2.0 CE",
        "CBCT Pelvis",
        "T2 FLAIR AXIAL",
        "PET WB AC",
        "Planning CT 3mm",
        "sag T1 MPRAGE",
        "DWI b1000",
        "Recon 2: Lung",
    ],
    "StudyDescription": [
        "RT Planning Head and Neck",
        "CT CHEST W CONTRAST",
        "MRI BRAIN W/WO",
        "PET-CT Whole Body",
        "Thorax^Planning",
        "RT^Pelvis (Adult)",
    ],
    "ProtocolName": [
        "HN_IMRT_70Gy",
        "Thorax 3mm Recon",
        "t1_mprage_sag",
        "RT_PELVIS_STD",
        "SBRT Lung 4D",
        "5.1 Head Routine",
    ],
    "ImageComments": [
        "Contrast given 80ml Omnipaque",
        "Patient supine, arms up",
        "Repeat scan due to motion",
        "Mask immobilisation",
        "Bolus 5mm on left neck",
    ],
    "RequestedProcedureDescription": ["RT Planning CT", "MRI Head Neck staging", "CT Thorax"],
    "ROIName": [
        "PTV_7000",
        "PTV_5600",
        "CTV_7000",
        "GTVp",
        "Lung_L",
        "Lung_R",
        "SpinalCord",
        "Brainstem",
        "Parotid_L",
        "Parotid_R",
        "Heart",
        "Esophagus",
        "Bladder",
        "Rectum",
        "Femur_Head_L",
        "Bone_Mandible",
        "Larynx",
        "Glnd_Submand_L",
        "Cavity_Oral",
        "External",
        "SpinalCord_PRV05",
        "Lungs",
    ],
    "Label": ["HN_v2", "PLAN1", "Thx_SBRT", "Pelvis_A", "RTSTRUCT1", "HN IMRT 70/35"],
    "RTPlanName": ["HN IMRT 70/35", "Lung SBRT 55Gy", "Prostate VMAT", "Whole Brain 20/5"],
    "TextValue": [
        "No evidence of metastatic disease.",
        "Impression: stable appearances.",
        "Findings consistent with post-treatment change.",
    ],
    "BeamName": ["G0", "Arc1 CW", "RAO 30", "Field 1"],
}
USEFUL_WORDS = {w for vs in USEFUL.values() for v in vs for w in words(v)} | {
    "lung",
    "head",
    "neck",
    "brain",
    "cord",
    "heart",
    "body",
    "chest",
    "thorax",
    "pelvis",
    "plan",
    "ct",
    "mr",
    "pet",
    "external",
    "contour",
}

# Templates per attribute: {U} useful text, the rest PHI slots (see Slots.fill).
TEMPLATES: dict[str, list[str]] = {
    "SeriesDescription": [
        "{U} {pt_last}",
        "{U} {sdate}",
        "{U} - {staff}",
        "{pt_last}_{U}",
        "{U} ({dob})",
        "{U}",
        "{U}",
        "{U} {odate}",
        "{U} acc {acc}",
        "{U} {staff_t}",
    ],
    "StudyDescription": [
        "{U} {pt}",
        "{U}^{pt_last}",
        "{U} for {pt}",
        "{U}",
        "{U} {inst_t}",
        "{U} {staff_t}",
        "{U} {sdate}",
        "{inst} {U}",
    ],
    "ProtocolName": ["{U}", "{U}_{pt_last}", "{inst}_{U}", "{U} {staff}", "{U} {staff_t}", "{U}"],
    "ImageComments": [
        "Pt {pt} MRN {mrn} DOB {dob}",
        "{U}. Scanned by {staff}",
        "{U}; call {phone_t} with results",
        "Report to {email}",
        "See {url}",
        "{U}. NOK {pt_t} tel {phone}",
        "Transferred from {inst_t}",
        "{age}, {U}",
        "NHS {natid} {U}",
        "lives at {addr}",
        "{U}",
        "{U} - {staff_t} {odate}",
        "Hosp No {mrn_t}",
    ],
    "StudyComments": [
        "Referred by {staff_t} ({inst_t})",
        "{pt} seen {sdate}",
        "Prev RT {odate} at {inst_t}",
        "Contact {email_t} or {phone_t}",
        "DOB {dob}, {age}",
        "{staff} to review",
    ],
    "AdditionalPatientHistory": [
        "{age}, prior surgery {odate}",
        "wife {pt_t} is carer",
        "previously at {inst_t} under {staff_t}",
        "lives {addr_t}",
    ],
    "PatientComments": ["Contact {pt_t} {phone_t}", "{email}", "SSN {natid}", "{url_t}"],
    "RequestedProcedureDescription": ["{U} {pt_last}", "{U}", "{U} {staff_t}", "{U} {sdate}"],
    "ReasonForTheRequestedProcedure": [
        "Planning for {pt}",
        "{staff_t} request",
        "rpt {odate}",
        "ref {inst_t}",
    ],
    "ScheduledProcedureStepDescription": ["{U} {sdate}", "{U} {pt_last}", "{U}"],
    "PerformedProcedureStepDescription": ["{U} {staff}", "{U}", "{U} {pt_last}"],
    "StructureSetLabel": ["{pt_last}", "HN_{pt_last}", "{U}", "{U}"],
    "StructureSetName": ["{U} {staff}", "{U}", "{pt}"],
    "StructureSetDescription": ["Contoured by {staff_t} {sdate}", "{U} {staff}", "{U}"],
    "ROIObservationLabel": ["{U}", "{pt_last}", "{U}"],
    "RTPlanLabel": ["{pt_last} HN", "{U}", "{U}", "{pt_last}"],
    "RTPlanName": ["{U} {pt_last}", "{U}", "{U} {staff}"],
    "RTPlanDescription": ["Approved by {staff} {sdate}; {U}", "{U}", "{U} for {pt} ({mrn})"],
    "BeamDescription": ["{U} {staff_t}", "{U}", "{U} {pt_last}"],
    "DoseComment": ["{U} {pt_last}", "{U}", "{U} {staff}"],
    "TextValue": [
        "Patient {pt} ({mrn}) seen at {inst} on {sdate}.",
        "{U} {staff_t}, {phone_t}",
        "Addendum: {email_t}",
        "{U}",
        "{U} Reported by {staff}.",
        "{U} DOB {dob}, {age}, lives at {addr}.",
        "{U} Acc {acc}",
    ],
    "Private LO": ["{pt}", "{mrn}", "{staff_t}", "{U} {sdate}", "{natid}"],
    "Private LT": ["{U} {staff_t}", "{pt} {dob}", "{email_t} {url_t}"],
    "Private PN": ["{staff_t}"],
}
SLOT = re.compile(r"\{(\w+)\}")


class Slots:
    """Fills a template's slots with forms of the case's values (or fresh text-only values)."""

    def __init__(self, ident: Identity) -> None:
        self.i = ident
        self.serial = 0

    def fresh(self, prefix: str) -> str:
        self.serial += 1
        return f"c{self.i.case}-{prefix}-{self.serial}"

    def fill(self, slot: str) -> Value | None:
        i, rng = self.i, self.i.rng
        if slot == "pt":
            form, n = i.name_form(i.patient, title=rng.random() < 0.3)
            return Value("patient name", form, tuple(n), "pt", True)
        if slot == "pt_last":
            p = i.patient
            form = rng.choice([p.last, p.last.upper(), f"{p.last}{p.first[0]}", p.last.lower()])
            n = (
                name_tokens(p.last)
                if form != f"{p.last}{p.first[0]}"
                else [fold(p.last + p.first[0])]
            )
            return Value("patient name", form, tuple(n), "pt", True)
        if slot == "pt_t":
            p = i.person()
            form, n = i.name_form(p)
            return Value("other person (text only)", form, tuple(n), self.fresh("pt"), False)
        if slot in ("staff", "staff_t"):
            if slot == "staff":
                role = rng.choice(sorted(i.staff))
                p, vid, head = i.staff[role], f"staff-{role}", True
            else:
                p, vid, head = i.person(), self.fresh("staff"), False
            form, n = i.name_form(p, title=rng.random() < 0.5)
            return Value("staff name", form, tuple(n), vid, head)
        if slot in ("dob", "sdate", "odate"):
            d = {"dob": i.birth, "sdate": i.study}.get(slot)
            if d is None:
                d = i.fake.date_between(date(1990, 1, 1), date(2025, 12, 31))
            form = rng.choice(date_forms(d, i.lang))
            kind = {
                "dob": "date of birth",
                "sdate": "study date",
                "odate": "other date (text only)",
            }[slot]
            return Value(
                kind,
                form,
                date_needles(form),
                slot if d is not None and slot != "odate" else self.fresh("date"),
                slot != "odate",
            )
        if slot in ("mrn", "mrn_t"):
            v = i.mrn if slot == "mrn" else str(rng.randint(10**5, 10**8))
            n = [fold(v), *digit_needles(v)]
            return Value(
                "MRN / patient ID",
                v,
                tuple(dict.fromkeys(n)),
                "mrn" if slot == "mrn" else self.fresh("mrn"),
                slot == "mrn",
            )
        if slot == "acc":
            return Value(
                "accession number",
                i.accession,
                tuple(dict.fromkeys([fold(i.accession), *digit_needles(i.accession)])),
                "acc",
                True,
            )
        if slot == "natid":
            v = i.national
            if rng.random() < 0.5:
                v = v.replace(" ", "").replace("-", "")
            n = [spaced(v), *digit_needles(v), *digit_needles(re.sub(r"[ \-]", "", v))]
            return Value("national ID (SSN/NHS)", v, tuple(dict.fromkeys(n)), "natid", True)
        if slot in ("phone", "phone_t"):
            v = i.phone if slot == "phone" else i.unique(i.fake.phone_number)
            n = [spaced(v), *digit_needles(v)]
            return Value(
                "phone number",
                v,
                tuple(dict.fromkeys(n)),
                "phone" if slot == "phone" else self.fresh("phone"),
                slot == "phone",
            )
        if slot in ("email", "email_t"):
            p = i.patient if slot == "email" else i.person()
            local = rng.choice(
                [f"{p.first}.{p.last}", f"{p.first[0]}{p.last}", f"{p.last}{rng.randint(1, 99)}"]
            )
            local = re.sub(r"[^a-z0-9.]", "", fold(german(local)))
            dom = rng.choice(
                [
                    "gmail.com",
                    "yahoo.co.uk",
                    "web.de",
                    "orange.fr",
                    "libero.it",
                    "hotmail.com",
                    f"{re.sub('[^a-z]', '', fold(i.address[1]))}-hospital.org",
                ]
            )
            v = f"{local}@{dom}"
            n = [local] + [t for t in re.split(r"[.\-]", local) if len(t) >= 3 and not t.isdigit()]
            n += loose_tokens(dom.replace("-", " ").replace(".", " "))
            return Value(
                "e-mail",
                v,
                tuple(dict.fromkeys(n)),
                "email" if slot == "email" else self.fresh("email"),
                slot == "email",
            )
        if slot in ("url", "url_t"):
            v = i.unique(i.other.url).rstrip("/")
            if rng.random() < 0.5:
                v += rng.choice(["/patients/", "/pacs/study?id=", "/portal/"]) + str(
                    rng.randint(1000, 99999)
                )
            if rng.random() < 0.3:
                v = re.sub(r"^https?://", "", v)
            host = re.sub(r"^https?://", "", v).split("/")[0]
            n = loose_tokens(host.replace(".", " ").replace("-", " "))
            return Value("URL", v, tuple(dict.fromkeys(n)), self.fresh("url"), False)
        if slot in ("addr", "addr_t"):
            if slot == "addr":
                street, city, post = i.address
            else:
                street, city, post = i.make_address()
            v = rng.choice(
                [f"{street}, {city} {post}", f"{street}, {city}", f"{city} {post}", f"{street}"]
            )
            n = loose_tokens(v) + ([spaced(post)] if post in v and " " in post else [])
            return Value(
                "address",
                v,
                tuple(dict.fromkeys(n)),
                "addr" if slot == "addr" else self.fresh("addr"),
                slot == "addr",
            )
        if slot in ("inst", "inst_t"):
            v = i.institution if slot == "inst" else i.make_institution(i.make_address()[1])
            return Value(
                "institution",
                v,
                tuple(dict.fromkeys(loose_tokens(v))),
                "inst" if slot == "inst" else self.fresh("inst"),
                slot == "inst",
            )
        if slot == "age":
            a = i.age_over_89 or rng.randint(91, 104)  # 90 itself is the "90 or older" bucket
            v = rng.choice(
                [f"aged {a}", f"{a} yo", f"{a}yo", f"{a} year old", f"{a}-year-old", f"age {a}",
                 f"{a:03d}Y", f"{a} y/o", f"{a} ans", f"{a} Jahre", f"{a} años", f"{a} anni"]
            )  # fmt: skip
            return Value("age over 89", v, (spaced(v),), self.fresh("age"), False)
        raise KeyError(slot)


# --- planting ----------------------------------------------------------------------------------


class Planter:
    """Writes one case's identity into the files of its study and records what went where."""

    def __init__(self, ident: Identity, seed: int) -> None:
        self.i = ident
        self.slots = Slots(ident)
        self.plants: list[Plant] = []
        self.useful: list[Useful] = []
        self.seed = seed
        self.study_uid = self.uid("study")
        self.sops: dict[str, str] = {}  # rel path -> planted SOPInstanceUID

    def uid(self, old: str) -> str:
        h = hashlib.sha256(f"{self.seed}|{self.i.case}|{old}".encode()).hexdigest()
        return "2.25." + str(int(h[:30], 16))

    def remap_uids(self, ds: Dataset, rel: str) -> None:
        """A new UID for each of the case's UIDs (the same everywhere in the case)."""
        for item, tag, vr, _raw in list(walk_raw(ds)):
            if vr != "UI":
                continue
            elem = item[tag]
            vals = (
                elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            )
            new = [v if not v or str(v) in UID_dictionary else self.uid(str(v)) for v in vals]
            elem.value = new if len(new) > 1 else new[0]
        sop = str(ds.SOPInstanceUID)
        if sop in self.sops.values():  # two of pydicom's files share their UIDs
            ds.SOPInstanceUID = self.uid(rel + sop)
        if hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def text(
        self, attr: str, vr: str, useful_key: str | None, rel: str, tag: int, path: str
    ) -> tuple[str, list[Value], str | None]:
        """A value for ``attr``: the template filled, the PHI in it, the useful part."""
        for _ in range(20):
            tpl = self.i.rng.choice(TEMPLATES[attr])
            u = self.i.rng.choice(USEFUL[useful_key]) if useful_key and "{U}" in tpl else None
            values: list[Value] = []
            out = tpl
            for slot in SLOT.findall(tpl):
                if slot == "U":
                    continue
                v = self.slots.fill(slot)
                assert v is not None
                values.append(v)
                out = out.replace("{" + slot + "}", v.form, 1)
            if u is not None:
                out = out.replace("{U}", u)
            elif "{U}" in out:
                continue
            if len(out) <= MAX_LEN.get(vr, 64) and ("\\" not in out):
                return out, values, u
        return "", [], None

    def put(
        self,
        ds: Dataset,
        keyword: str,
        rel: str,
        *,
        useful_key: str | None = None,
        path: str = "",
        template: str | None = None,
    ) -> None:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = pydicom.datadict.dictionary_VR(tag)
        value, values, u = self.text(template or keyword, vr, useful_key, rel, tag, path)
        if not value:
            return
        setattr(ds, keyword, value)
        self.record(rel, path + keyword, tag, value, values, u)

    def put_private(self, ds: Dataset, rel: str) -> None:
        block = ds.private_block(0x0011, "RXH LOCAL 1.0", create=True)
        for off, (vr, tpl) in enumerate(
            [
                ("LO", "Private LO"),
                ("LT", "Private LT"),
                ("PN", "Private PN"),
                ("LO", "Private LO"),
            ],
            start=1,
        ):
            value, values, _u = self.text(tpl, vr, "ImageComments", rel, 0, "")
            if not value:
                continue
            if vr == "PN" and " " in value:
                parts = value.split(" ", 1)
                value = f"{parts[1]}^{parts[0]}"
            block.add_new(off, vr, value)
            tag = block.get_tag(off)
            # a private tag's text is not kept for its use: its useful part is not counted
            self.record(rel, f"Private(0011,{tag & 0xFFFF:04X}) {vr}", tag, value, values, None)

    def record(
        self, rel: str, attr: str, tag: int, text: str, values: Iterable[Value], useful: str | None
    ) -> None:
        values = list(values)
        for v in values:
            self.plants.append(Plant(self.i.case, rel, attr, tag, text, v))
        if useful is not None:
            self.useful.append(Useful(self.i.case, rel, attr, tag, useful, bool(values)))

    def header(self, ds: Dataset, rel: str) -> None:
        """The patient, study and staff modules: the values the study-wide matcher can find."""
        i = self.i
        p = i.patient

        def pn(key: str, person: Person, kind: str, vid: str) -> None:
            form, n = i.name_form(person, dicom=True)
            setattr(ds, key, form)
            self.record(
                rel,
                key,
                pydicom.datadict.tag_for_keyword(key) or 0,
                form,
                [Value(kind, form, tuple(n), vid, True)],
                None,
            )

        def plain(key: str, value: str, kind: str, needles: Iterable[str], vid: str) -> None:
            setattr(ds, key, value)
            self.record(
                rel,
                key,
                pydicom.datadict.tag_for_keyword(key) or 0,
                value,
                [Value(kind, value, tuple(dict.fromkeys(needles)), vid, True)],
                None,
            )

        pn("PatientName", p, "patient name", "pt")
        ds.OtherPatientNames = f"{i.birth_surname.upper()}^{p.first.upper()}"
        self.record(
            rel,
            "OtherPatientNames",
            0x00101001,
            ds.OtherPatientNames,
            [
                Value(
                    "patient name",
                    ds.OtherPatientNames,
                    tuple(name_tokens(i.birth_surname)),
                    "pt-birth",
                    True,
                )
            ],
            None,
        )
        ds.PatientMotherBirthName = f"{i.mother.upper()}"
        self.record(
            rel,
            "PatientMotherBirthName",
            0x00101060,
            ds.PatientMotherBirthName,
            [Value("patient name", i.mother, tuple(name_tokens(i.mother)), "mother", True)],
            None,
        )
        plain("PatientID", i.mrn, "MRN / patient ID", [fold(i.mrn), *digit_needles(i.mrn)], "mrn")
        plain(
            "OtherPatientIDs",
            i.national.replace(" ", ""),
            "national ID (SSN/NHS)",
            [fold(i.national.replace(" ", "")), *digit_needles(i.national)],
            "natid",
        )
        b = i.birth
        plain("PatientBirthDate", f"{b:%Y%m%d}", "date of birth", [f"{b:%Y%m%d}"], "dob")
        if i.age_over_89:
            plain(
                "PatientAge",
                f"{i.age_over_89:03d}Y",
                "age over 89",
                [f"{i.age_over_89:03d}y"],
                "age",
            )
        else:
            ds.PatientAge = f"{(i.study - b).days // 365:03d}Y"
        street, city, post = i.address
        plain(
            "PatientAddress",
            f"{street}, {city}, {post}",
            "address",
            [*loose_tokens(f"{street} {city}"), spaced(post)],
            "addr",
        )
        plain(
            "PatientTelephoneNumbers",
            i.phone,
            "phone number",
            [spaced(i.phone), *digit_needles(i.phone)],
            "phone",
        )
        plain(
            "AccessionNumber",
            i.accession,
            "accession number",
            [fold(i.accession), *digit_needles(i.accession)],
            "acc",
        )
        plain("StudyDate", f"{i.study:%Y%m%d}", "study date", [f"{i.study:%Y%m%d}"], "sdate")
        ds.SeriesDate = ds.ContentDate = f"{i.study:%Y%m%d}"
        for key, role in (
            ("ReferringPhysicianName", "referring"),
            ("OperatorsName", "operator"),
            ("PerformingPhysicianName", "performing"),
            ("NameOfPhysiciansReadingStudy", "reading"),
            ("RequestingPhysician", "requesting"),
            ("PhysiciansOfRecord", "physicist"),
        ):
            pn(key, i.staff[role], "staff name", f"staff-{role}")
        plain("InstitutionName", i.institution, "institution", loose_tokens(i.institution), "inst")
        plain(
            "InstitutionAddress",
            f"{street}, {city}",
            "address",
            loose_tokens(f"{street} {city}"),
            "addr",
        )
        plain("StationName", i.station, "station name", [fold(i.station)], "station")
        ds.SpecificCharacterSet = "ISO_IR 192"

    def free_text(self, ds: Dataset, rel: str) -> None:
        for key, ukey in (
            ("SeriesDescription", "SeriesDescription"),
            ("StudyDescription", "StudyDescription"),
            ("ProtocolName", "ProtocolName"),
            ("ImageComments", "ImageComments"),
            ("StudyComments", None),
            ("AdditionalPatientHistory", None),
            ("PatientComments", None),
            ("PerformedProcedureStepDescription", "StudyDescription"),
        ):
            self.put(ds, key, rel, useful_key=ukey)
        item = Dataset()
        path = "RequestAttributesSequence>"
        self.put(
            item,
            "RequestedProcedureDescription",
            rel,
            useful_key="RequestedProcedureDescription",
            path=path,
        )
        self.put(item, "ReasonForTheRequestedProcedure", rel, path=path)
        self.put(
            item, "ScheduledProcedureStepDescription", rel, useful_key="StudyDescription", path=path
        )
        item.RequestedProcedureID = self.i.accession
        self.record(
            rel,
            path + "RequestedProcedureID",
            0x00401001,
            self.i.accession,
            [
                Value(
                    "accession number",
                    self.i.accession,
                    (fold(self.i.accession), *digit_needles(self.i.accession)),
                    "acc",
                    True,
                )
            ],
            None,
        )
        item.ScheduledProcedureStepID = f"SPS{self.i.rng.randint(1, 999)}"
        ds.RequestAttributesSequence = DicomSequence([item])
        self.put_private(ds, rel)

    def rt(self, ds: Dataset, rel: str) -> None:
        modality = str(ds.get("Modality", ""))
        i = self.i
        if modality == "RTSTRUCT":
            self.put(ds, "StructureSetLabel", rel, useful_key="Label")
            self.put(ds, "StructureSetName", rel, useful_key="Label")
            self.put(ds, "StructureSetDescription", rel, useful_key="ImageComments")
            names = list(USEFUL["ROIName"])
            i.rng.shuffle(names)
            for n, roi in enumerate(ds.get("StructureSetROISequence", [])):
                path = "StructureSetROISequence>"
                if n % 4 == 3:  # a name in an ROI: GTV_Patel, z_jsmith
                    v = self.slots.fill(i.rng.choice(["pt_last", "staff", "staff_t"]))
                    assert v is not None
                    pre = i.rng.choice(["GTV_", "z_", "Ring ", "PTV_", ""])
                    text = f"{pre}{v.form}"[:64]
                    roi.ROIName = text
                    self.record(rel, path + "ROIName", 0x30060026, text, [v], None)
                else:
                    roi.ROIName = names[n % len(names)]
                    self.record(rel, path + "ROIName", 0x30060026, roi.ROIName, [], roi.ROIName)
            for obs in ds.get("RTROIObservationsSequence", []):
                path = "RTROIObservationsSequence>"
                self.put(obs, "ROIObservationLabel", rel, useful_key="ROIName", path=path)
                form, nt = i.name_form(i.staff["contourer"], dicom=True)
                obs.ROIInterpreter = form
                self.record(
                    rel,
                    path + "ROIInterpreter",
                    0x300600A6,
                    form,
                    [Value("staff name", form, tuple(nt), "staff-contourer", True)],
                    None,
                )
        if modality == "RTPLAN":
            self.put(ds, "RTPlanLabel", rel, useful_key="Label")
            self.put(ds, "RTPlanName", rel, useful_key="RTPlanName")
            self.put(ds, "RTPlanDescription", rel, useful_key="RTPlanName")
            form, nt = i.name_form(i.staff["reviewer"], dicom=True)
            ds.ReviewerName = form
            self.record(
                rel,
                "ReviewerName",
                0x300E0008,
                form,
                [Value("staff name", form, tuple(nt), "staff-reviewer", True)],
                None,
            )
            for beam in ds.get("BeamSequence", []):
                beam.BeamName = i.rng.choice(USEFUL["BeamName"])
                self.record(
                    rel, "BeamSequence>BeamName", 0x300A00C2, beam.BeamName, [], beam.BeamName
                )
                self.put(beam, "BeamDescription", rel, useful_key="BeamName", path="BeamSequence>")
        if modality == "RTDOSE":
            self.put(ds, "DoseComment", rel, useful_key="RTPlanName")

    def sr(self, ds: Dataset, rel: str) -> None:
        if str(ds.get("Modality", "")) != "SR":
            return
        items = []
        for _ in range(4):
            item = Dataset()
            item.RelationshipType = "CONTAINS"
            item.ValueType = "TEXT"
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
                "121071",
                "DCM",
                "Finding",
            )
            item.ConceptNameCodeSequence = DicomSequence([code])
            self.put(item, "TextValue", rel, useful_key="TextValue", path="ContentSequence>")
            items.append(item)
        pitem = Dataset()
        pitem.RelationshipType, pitem.ValueType = "HAS OBS CONTEXT", "PNAME"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
            "121008",
            "DCM",
            "Person Observer Name",
        )
        pitem.ConceptNameCodeSequence = DicomSequence([code])
        v = self.slots.fill("staff_t")
        assert v is not None
        pn = "^".join(reversed(v.form.split(" ", 1))) if " " in v.form else v.form
        pitem.PersonName = pn
        self.record(rel, "ContentSequence>PersonName", 0x0040A123, pn, [v], None)
        items.append(pitem)
        ds.ContentSequence = DicomSequence(list(ds.get("ContentSequence", [])) + items)

    def plant(self, src: Path, dst: Path, rel: str) -> None:
        ds = pydicom.dcmread(src, force=True)
        if "SOPInstanceUID" not in ds:
            return
        self.remap_uids(ds, rel)
        ds.StudyInstanceUID = self.study_uid
        self.header(ds, rel)
        self.free_text(ds, rel)
        self.rt(ds, rel)
        self.sr(ds, rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dst)
        self.sops[rel] = str(ds.SOPInstanceUID)


def base_files(work: Path, kind: str, ident: Identity | None) -> list[Path]:
    """The real files one case is planted into."""
    if kind == "sample":
        p = (
            Patient()
            if ident is None
            else Patient(
                name=f"{ident.patient.last.upper()}^{ident.patient.first.upper()}",
                spoken_name=f"{ident.patient.first} {ident.patient.last}",
                patient_id=re.sub(r"\D", "", ident.mrn) or "123456",
                other_id=ident.mrn,
                birth_date=f"{ident.birth:%Y%m%d}",
                accession=ident.accession,
                address=", ".join(ident.address),
                phone=ident.phone,
                study_date=f"{ident.study:%Y%m%d}",
                tag=str(ident.case + 100),
            )
        )
        out = work / ("sample-control" if ident is None else f"sample-{ident.case}")
        return [
            f
            for f in write_study(out, slices=3, size=32, points=12, patient=p)
            if f.suffix != ".txt"
        ]
    if kind == "dicompyler":
        return [DICOMPYLER / n for n in DICOMPYLER_FILES]
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    return [test_files / n for n in PYDICOM_FILES]


# --- running and reading -----------------------------------------------------------------------


def run_anonymise(
    src: Path, out: Path, key: Path, maps: Path, protocol: Path | None, site: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "uploader",
        "anonymise",
        str(src),
        str(out),
        "--key-file",
        str(key),
        "--json",
        "--mapping-dir",
        str(maps),
    ]
    if protocol is not None:
        cmd += ["--protocol", str(protocol), "--site", site]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"anonymise failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


TEXT_VRS = {
    "AE",
    "AS",
    "CS",
    "DA",
    "DS",
    "DT",
    "IS",
    "LO",
    "LT",
    "PN",
    "SH",
    "ST",
    "TM",
    "UC",
    "UI",
    "UR",
    "UT",
    "UN",
    "OB",
}
PIXELS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def walk_raw(ds: Dataset) -> Iterable[tuple[Dataset, int, str, Any]]:
    """(dataset, tag, VR, raw element) at any depth, converting only sequences."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        if vr is None:
            try:
                vr = pydicom.datadict.dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        if vr == "SQ" or (getattr(raw, "length", 0) == 0xFFFFFFFF and int(tag) not in PIXELS):
            try:
                elem = ds[tag]
            except Exception:
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    yield from walk_raw(item)
                continue
        yield ds, int(tag), vr, raw


def raw_value_text(raw: Any) -> str:
    v = raw.value
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return v.decode("latin-1")
    if isinstance(v, pydicom.multival.MultiValue):
        return "\\".join(str(x) for x in v)
    return "" if v is None else str(v)


def element_texts(path: Path) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Each text element's value by tag, at any depth: folded, and as written."""
    folded: dict[int, list[str]] = defaultdict(list)
    plain: dict[int, list[str]] = defaultdict(list)
    try:
        ds = pydicom.dcmread(path, force=True)
        for _ds, tag, vr, raw in walk_raw(ds):
            if tag in PIXELS or vr not in TEXT_VRS:
                continue
            if vr in ("DS", "IS", "OB", "UN") and (getattr(raw, "length", 0) or 0) > 256:
                continue  # contour points, blobs
            text = raw_value_text(raw).rstrip(" \x00")
            if text:
                plain[tag].append(text)
                folded[tag].append(fold(text))
    except Exception:
        pass
    return folded, plain


def raw_texts(path: Path) -> str:
    """The file's bytes up to its pixels, folded as Latin-1 and as UTF-8."""
    data = path.read_bytes()
    for pixel_tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        at = data.find(pixel_tag, 132)
        if at > 0:
            data = data[:at]
    return fold(data.decode("latin-1")) + "\n" + fold(data.decode("utf-8", "replace"))


class Haystack:
    """Folded text, searched for needles as whole words or digit groups (token sets: fast).

    ``text`` is the decoded element values and paths; ``raw`` the files' bytes up to the pixels,
    where a needle of three characters or fewer is not looked for (binary spells `li`, `wu`).
    """

    def __init__(self, text: str, raw: str = "") -> None:
        self.parts = [(text, set(re.findall(r"[a-z]+", text)), set(re.findall(r"[0-9]+", text)))]
        if raw:
            self.parts.append(
                (raw, set(re.findall(r"[a-z]+", raw)), set(re.findall(r"[0-9]+", raw)))
            )
        self.text = text + "\n" + raw
        self.cache: dict[str, bool] = {}

    def has(self, needle: str) -> bool:
        hit = self.cache.get(needle)
        if hit is None:
            hit = any(
                self._in(needle, *part) for part in self.parts[: 1 if len(needle) <= 3 else 2]
            )
            self.cache[needle] = hit
        return hit

    @staticmethod
    def _in(needle: str, text: str, alpha: set[str], digits: set[str]) -> bool:
        if needle.isascii() and needle.isalpha():
            return needle in alpha
        if needle.isascii() and needle.isdigit():
            return needle in digits
        return needle in text and needle_regex(needle).search(text) is not None


@dataclass
class Output:
    """One setting's outputs, by case: what can be searched and by element."""

    hay: dict[int, Haystack] = field(default_factory=dict)  # case -> everything, folded
    elements: dict[tuple[int, str], dict[int, list[str]]] = field(default_factory=dict)
    raw_elements: dict[tuple[int, str], dict[int, list[str]]] = field(default_factory=dict)
    withheld: int = 0
    written: int = 0
    missing: set[tuple[int, str]] = field(default_factory=set)


def read_outputs(out: Path, maps: Path, sops: dict[str, tuple[int, str]]) -> Output:
    """Map each output file back to its case and planted file through the UID mapping."""
    with (maps / "uid_mapping.csv").open(newline="", encoding="utf-8") as f:
        new_to_old = {r["id_new"]: r["id_old"] for r in csv.DictReader(f)}
    res = Output()
    parts: dict[int, list[str]] = defaultdict(list)
    raws: dict[int, list[str]] = defaultdict(list)
    seen: set[tuple[int, str]] = set()
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out).as_posix()
        old = new_to_old.get(path.stem, "")
        case, file = sops.get(old, (-1, ""))
        parts[case].append(fold(rel))
        raws[case].append(raw_texts(path))
        texts, raw_el = element_texts(path)
        for vs in texts.values():
            parts[case].extend(vs)
        res.elements[(case, file)] = texts
        res.raw_elements[(case, file)] = raw_el
        seen.add((case, file))
        res.written += 1
    res.hay = {c: Haystack("\n".join(v), "\n".join(raws[c])) for c, v in parts.items()}
    res.missing = set(sops.values()) - seen
    return res


@dataclass
class Result:
    plants: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    leaked_kind: Counter[str] = field(default_factory=Counter)
    values_kind: Counter[str] = field(default_factory=Counter)
    values_leaked_kind: Counter[str] = field(default_factory=Counter)
    by_attr: Counter[str] = field(default_factory=Counter)
    leaked_attr: Counter[str] = field(default_factory=Counter)
    by_head: Counter[str] = field(default_factory=Counter)
    leaked_head: Counter[str] = field(default_factory=Counter)
    by_locale: Counter[str] = field(default_factory=Counter)
    leaked_locale: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    judged: list[dict[str, object]] = field(default_factory=list)  # every instance, for --dump
    dropped: int = 0
    dropped_needles: Counter[str] = field(default_factory=Counter)


def judge(plants: list[Plant], out: Output, background: Haystack) -> Result:
    res = Result()
    regex: dict[str, re.Pattern[str]] = {}

    def found(needle: str, text: str) -> bool:
        rx = regex.get(needle) or regex.setdefault(needle, needle_regex(needle))
        return rx.search(text) is not None

    values: dict[tuple[int, str], list[bool]] = defaultdict(list)
    value_kind: dict[tuple[int, str], str] = {}
    for p in plants:
        needles = [n for n in p.value.needles if n and not background.has(n)]
        res.dropped += len(p.value.needles) - len(needles)
        res.dropped_needles.update(n for n in p.value.needles if n not in needles)
        if not needles:
            continue
        key = (p.case, p.file)
        if key in out.missing:
            continue  # withheld or not written: nothing of it is out
        res.plants += 1
        hay = out.hay.get(p.case, Haystack(""))
        anywhere = [n for n in needles if hay.has(n)]
        here = out.elements.get(key, {}).get(p.tag, [])
        at_place = [n for n in needles if any(found(n, t) for t in here)]
        # per attribute: still in its own attribute, or (typed only there) anywhere
        leak = bool(at_place) or (not p.value.in_headers and bool(anywhere))
        head = "also in headers" if p.value.in_headers else "text only"
        res.by_kind[p.value.kind] += 1
        res.by_attr[p.attr] += 1
        res.by_head[head] += 1
        locale = LOCALES[p.case % len(LOCALES)]
        res.by_locale[locale] += 1
        res.leaked_locale[locale] += leak
        vkey = (p.case, p.value.value_id)
        values[vkey].append(bool(anywhere))
        value_kind[vkey] = p.value.kind
        if leak:
            res.leaked_kind[p.value.kind] += 1
            res.leaked_attr[p.attr] += 1
            res.leaked_head[head] += 1
            raw = out.raw_elements.get(key, {}).get(p.tag, [])
            kept = next((r for r in raw if any(found(n, fold(r)) for n in at_place)), "")
            if not kept:
                kept = "(elsewhere: " + _context(hay.text, anywhere[0]) + ")"
            res.examples.append((p.value.kind, p.attr, p.value.form, p.text, kept))
        res.judged.append(
            {
                "case": p.case,
                "locale": locale,
                "kind": p.value.kind,
                "attr": p.attr,
                "form": str(p.value.form),
                "planted": str(p.text),
                "in_headers": p.value.in_headers,
                "leaked": leak,
                "kept": res.examples[-1][4] if leak else "",
            }
        )
    for vkey, hits in values.items():
        res.values_kind[value_kind[vkey]] += 1
        res.values_leaked_kind[value_kind[vkey]] += any(hits)
    return res


def _context(hay: str, needle: str) -> str:
    m = needle_regex(needle).search(hay)
    if not m:
        return "?"
    s = hay[max(0, m.start() - 30) : m.end() + 30]
    return re.sub(r"[^\x20-\x7e]", ".", s)


def useful_survival(
    useful: list[Useful], out: Output
) -> tuple[Counter[bool], Counter[bool], Counter[str], Counter[str], list[tuple[str, str, str]]]:
    """Useful texts still in their attribute as planted; by beside-PHI or not, by attribute."""
    ok: Counter[bool] = Counter()
    counted: Counter[bool] = Counter()
    per: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    examples: list[tuple[str, str, str]] = []
    for u in useful:
        key = (u.case, u.file)
        if key in out.missing:
            continue
        counted[u.beside_phi] += 1
        per[u.attr] += 1
        raw = out.raw_elements.get(key, {}).get(u.tag, [])
        if any(u.text in r for r in raw):
            ok[u.beside_phi] += 1
        else:
            lost[u.attr] += 1
            examples.append((u.attr, u.text, " | ".join(raw) if raw else "(gone)"))
    return ok, counted, per, lost, examples


def report(name: str, res: Result, out: Output, n_examples: int, rng: random.Random) -> None:
    print(
        f"\n=== {name}: {out.written} files written, {len(out.missing)} planted files not "
        f"written (withheld/failed); {res.plants} planted instances judged; "
        f"{res.dropped} needles dropped as background"
    )
    if res.dropped_needles:
        common = ", ".join(f"{n!r} x{c}" for n, c in res.dropped_needles.most_common(8))
        print(f"  background needles (in the unplanted control's output too): {common}")
    total_l = sum(res.leaked_kind.values())
    print(
        f"instances leaked: {total_l}/{res.plants} ({100 * total_l / max(res.plants, 1):.1f}%);"
        f" PHI values leaked anywhere: {sum(res.values_leaked_kind.values())}/"
        f"{sum(res.values_kind.values())}"
    )
    print(f"  {'kind':28s} {'inst leaked':>12s} {'values leaked':>14s}")
    for kind in sorted(res.by_kind, key=lambda k: -res.leaked_kind[k]):
        print(
            f"  {kind:28s} {res.leaked_kind[kind]:5d}/{res.by_kind[kind]:<6d} "
            f"{res.values_leaked_kind[kind]:6d}/{res.values_kind[kind]:<6d}"
        )
    for h in sorted(res.by_head):
        print(f"  {h:28s} {res.leaked_head[h]:5d}/{res.by_head[h]}")
    print(
        "  by locale: "
        + ", ".join(
            f"{loc} {res.leaked_locale[loc]}/{res.by_locale[loc]}"
            for loc in LOCALES
            if res.by_locale[loc]
        )
    )
    print("worst attributes (instances leaked/planted):")
    worst = sorted(res.by_attr, key=lambda a: (-res.leaked_attr[a], a))
    for a in worst[:15]:
        if res.leaked_attr[a]:
            print(f"  {a:58s} {res.leaked_attr[a]:4d}/{res.by_attr[a]}")
    clean = [a for a in worst if not res.leaked_attr[a]]
    print(f"  no leak in {len(clean)} attributes: {', '.join(sorted(clean))[:600]}")
    if res.examples and n_examples:
        print(
            f"{n_examples} example leaks (kind | attribute | form | planted value -> kept value):"
        )
        by_kind: dict[str, list[tuple[str, str, str, str, str]]] = defaultdict(list)
        for ex in res.examples:
            by_kind[ex[0]].append(ex)
        for lst in by_kind.values():
            rng.shuffle(lst)
        picked: list[tuple[str, str, str, str, str]] = []
        while len(picked) < n_examples and any(by_kind.values()):
            for k in sorted(by_kind, key=lambda k: -len(by_kind[k])):
                if by_kind[k] and len(picked) < n_examples:
                    picked.append(by_kind[k].pop())
        for kind, attr, form, text, kept in picked:
            print(f"  {kind} | {attr} | {form!r} | {text[:70]!r} -> {kept[:90]!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=27, help="studies (one identity each)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument(
        "--protocol", type=Path, default=ROOT / "protocols" / "example-head-neck-imrt.yaml"
    )
    ap.add_argument("--site", default="RXH")
    ap.add_argument("--keep", type=Path, help="keep the planted tree and outputs here")
    ap.add_argument("--dump", type=Path, help="write every leak and lost useful text (JSON lines)")
    args = ap.parse_args()
    if args.dump:
        args.dump.unlink(missing_ok=True)
    warnings.filterwarnings("ignore")  # pydicom's notes on the odd values planted on purpose
    started = time.perf_counter()
    import faker

    work = Path(tempfile.mkdtemp(prefix="deid-recall-")) if args.keep is None else args.keep
    if args.keep is not None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    try:
        key = work / "site.key"
        key.write_text(hashlib.sha256(f"deid-recall-{args.seed}".encode()).hexdigest() + "\n")
        key.chmod(0o600)
        kinds = ["sample", "pydicom"] + (["dicompyler"] if DICOMPYLER.exists() else [])
        # control: the same real files, nothing planted
        control = work / "control"
        for kind in kinds:
            for f in base_files(work / "gen", kind, None):
                dst = control / kind / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dst)
        planted = work / "in"
        plants: list[Plant] = []
        useful: list[Useful] = []
        sops: dict[str, tuple[int, str]] = {}
        for case in range(args.cases):
            ident = Identity(case, LOCALES[case % len(LOCALES)], args.seed)
            kind = kinds[case % len(kinds)]
            pl = Planter(ident, args.seed)
            files = base_files(work / "gen", kind, ident)
            if kind == "pydicom":  # a few of pydicom's files per case, all of them across cases
                files = [files[(case // len(kinds) * 4 + k) % len(files)] for k in range(4)]
                if case % 3 == 1:
                    files.append(files[0].parent / "rtstruct.dcm")
                files = list(dict.fromkeys(files))
            for f in files:
                rel = f"{kind}/{f.parent.name}_{f.name}"
                pl.plant(f, planted / f"case{case:02d}" / rel, rel)
            plants += pl.plants
            useful += pl.useful
            for rel, sop in pl.sops.items():
                sops[sop] = (case, rel)
        t_gen = time.perf_counter() - started
        print(
            f"faker {faker.VERSION}, pydicom {pydicom.__version__}, seed {args.seed}: "
            f"{args.cases} cases over {', '.join(LOCALES)}; bases: {', '.join(kinds)}; "
            f"{len(sops)} planted files, {len(plants)} PHI instances, "
            f"{len({(p.case, p.value.value_id) for p in plants})} PHI values, "
            f"{len(useful)} useful texts ({t_gen:.1f} s)"
        )
        settings = [
            ("(a) Basic Profile", None),
            (f"(b) {args.protocol.name} --site {args.site}", args.protocol),
        ]
        rng = random.Random(args.seed)
        for name, protocol in settings:
            tag = "a" if protocol is None else "b"
            t0 = time.perf_counter()
            cout, cmap = work / f"control-out-{tag}", work / f"control-map-{tag}"
            run_anonymise(control, cout, key, cmap, protocol, args.site)
            bg_raw = [raw_texts(p) for p in cout.rglob("*") if p.is_file()]
            bg_parts = [fold(p.relative_to(cout).as_posix()) for p in cout.rglob("*")]
            for p in cout.rglob("*.dcm"):
                for vs in element_texts(p)[0].values():
                    bg_parts.extend(vs)
            useful_text = fold(" ".join(v for vs in USEFUL.values() for v in vs))
            background = Haystack("\n".join([*bg_parts, useful_text]), "\n".join(bg_raw))
            out, maps = work / f"out-{tag}", work / f"map-{tag}"
            summary = run_anonymise(planted, out, key, maps, protocol, args.site)
            t_run = time.perf_counter() - t0
            outputs = read_outputs(out, maps, sops)
            res = judge(plants, outputs, background)
            print(
                f"\n[{name}: control + planted runs {t_run:.1f} s; withheld "
                f"{len(summary.get('withheld', []))}, failed {len(summary.get('failed', []))}]"
            )
            for w in summary.get("withheld", [])[:5]:
                print(f"  withheld: {w['file']}: {w['reason'][:120]}")
            report(name, res, outputs, args.examples, rng)
            if protocol is not None:
                ok, counted, per, lost, ex = useful_survival(useful, outputs)
                n_ok, n = sum(ok.values()), sum(counted.values())
                print(
                    f"\nuseful text surviving unchanged under {name}: {n_ok}/{n} "
                    f"({100 * n_ok / max(n, 1):.1f}%); alone in its value {ok[False]}/"
                    f"{counted[False]}, typed beside PHI {ok[True]}/{counted[True]}"
                )
                for a in sorted(per, key=lambda a: -lost[a]):
                    print(f"  {a:58s} kept {per[a] - lost[a]:4d}/{per[a]}")
                lost_text = Counter((attr, text) for attr, text, _kept in ex)
                print("  useful texts lost most often (attribute, text: times):")
                for (attr, text), n in lost_text.most_common(12):
                    kept = next(k for a, t, k in ex if (a, t) == (attr, text))
                    print(f"    {attr} {text!r}: {n}  e.g. -> {kept[:70]!r}")
                if args.dump:
                    with args.dump.open("a", encoding="utf-8") as f:
                        for attr, text, kept in ex:
                            f.write(
                                json.dumps(
                                    {
                                        "setting": tag,
                                        "lost_useful": text,
                                        "attr": attr,
                                        "kept": kept,
                                    }
                                )
                                + "\n"
                            )
            if args.dump:
                with args.dump.open("a", encoding="utf-8") as f:
                    for row in res.judged:
                        f.write(json.dumps({"setting": tag, **row}) + "\n")
        print(f"\ntotal {time.perf_counter() - started:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
