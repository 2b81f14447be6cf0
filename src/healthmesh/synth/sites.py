"""The network's sites: identity, staff, identifiers, and each site's copy of a patient.

A :class:`Site` is one organisation of a given kind. It owns the keyed permutations that
turn a true person index into its local Patient id and MRN, its practitioners, and the
site-level resources every file set starts with (its own Organization, partner
Organizations it references, Practitioners, Questionnaires). :class:`Chart` collects one
patient's resources at one site and hands out their ids (``<patient id>-<n>``, unique per
site and matching the FHIR id pattern).
"""

from __future__ import annotations

import random
from typing import Any

from . import codes
from .keys import Permutation, derive
from .population import Region, names
from .surveys import questionnaire

__all__ = ["SITE_KINDS", "Chart", "Site"]

SITE_KINDS = ("hospital", "clinic", "lab", "insurer", "pharmacy", "dental", "public-health")

SITE_NAMES = {
    "hospital": "Riverside General Hospital",
    "clinic": "Maple Street Family Practice",
    "lab": "Northgate Clinical Laboratories",
    "insurer": "Commonwealth Mutual Health Plan",
    "pharmacy": "Corner Care Pharmacy",
    "dental": "Bright Smile Dental Group",
    "public-health": "Regional Department of Public Health",
}
_STAFF = {"hospital": 40, "clinic": 24, "lab": 6, "insurer": 0, "pharmacy": 8, "dental": 8,
          "public-health": 4}
_MRN_FORMAT = {"hospital": "{:09d}", "clinic": "C{:09d}", "lab": "L{:09d}", "insurer": "W{:09d}",
               "pharmacy": "RX{:09d}", "dental": "D{:09d}", "public-health": "PH{:09d}"}
# Organizations a site refers to besides itself (claims, immunization reports).
_PARTNERS = {"insurer": ("hospital", "clinic", "lab", "pharmacy", "dental"),
             "public-health": ("hospital", "clinic", "pharmacy")}
_QUESTIONNAIRES = {"clinic": ("phq-9", "pain-nrs", "experience-of-care"),
                   "hospital": ("pain-nrs", "experience-of-care")}
_ORG_TYPE = {"insurer": "ins", "public-health": "govt"}


class Site:
    """One organisation of the network and the keys it uses to identify patients."""

    def __init__(self, kind: str, seed: int, region: Region) -> None:
        self.kind, self.region = kind, region
        self.org_ref = {"reference": f"Organization/{kind}"}
        self.mrn_system = f"urn:healthmesh:site:{kind}:" + (
            "member-id" if kind == "insurer" else "mrn")
        self._ids = Permutation(derive(seed, "patient-id", kind), 1 << 40)
        self._mrns = Permutation(derive(seed, "mrn", kind), 1_000_000_000)
        self._mrn_format = _MRN_FORMAT[kind]
        self.practitioners = [f"pr-{kind}-{i + 1:03d}" for i in range(_STAFF[kind])]
        self.practitioner_refs = [{"reference": f"Practitioner/{p}"} for p in self.practitioners]
        self._seed = seed

    def patient_id(self, index: int) -> str:
        """The site's Patient id for a person (a keyed permutation of the true index)."""
        return f"{self._ids(index):010x}"

    def mrn(self, index: int) -> str:
        """The site's medical record (or member) number for a person."""
        return self._mrn_format.format(self._mrns(index % self._mrns.size))

    def practitioner(self, n: int) -> dict[str, str]:
        """A Reference to the n-th practitioner (modulo the staff size)."""
        return self.practitioner_refs[n % len(self.practitioner_refs)]

    def static_resources(self) -> list[dict[str, Any]]:
        """Organizations, Practitioners and Questionnaires this site's data refers to."""
        out = [organization(self.kind, self.region)]
        out += [organization(k, self.region) for k in _PARTNERS.get(self.kind, ())]
        rng = random.Random(derive(self._seed, "staff", self.kind))
        out += [_practitioner(pid, rng, n) for n, pid in enumerate(self.practitioners)]
        out += [questionnaire(q) for q in _QUESTIONNAIRES.get(self.kind, ())]
        return out


def organization(kind: str, region: Region) -> dict[str, Any]:
    """The Organization resource of a site kind."""
    city = region.cities[0]
    address = {"line": [f"{100 + 7 * SITE_KINDS.index(kind)} Commonwealth Avenue"],
               "city": city["name"], "postalCode": city["postal_codes"][0],
               "country": region.country}
    if region.state:
        address["state"] = region.state
    return {
        "resourceType": "Organization", "id": kind,
        "identifier": [{"system": "urn:healthmesh:network:organization", "value": kind}],
        "active": True, "type": codes.ORG_TYPE[_ORG_TYPE.get(kind, "prov")],
        "name": SITE_NAMES[kind], "address": [address],
    }


def _practitioner(pid: str, rng: random.Random, n: int) -> dict[str, Any]:
    sex = "female" if rng.random() < 0.52 else "male"
    name_list = names()
    return {
        "resourceType": "Practitioner", "id": pid,
        "identifier": [{"system": codes.NPI, "value": f"999{rng.randrange(10**7):07d}"}],
        "active": True,
        "name": [{"family": name_list.last(rng), "given": [name_list.first(rng, sex)],
                  "prefix": ["Dr."]}],
        "gender": sex,
    }


class Chart:
    """One patient's resources at one site, and the ids handed out for them."""

    __slots__ = ("site", "pid", "subject", "out", "n", "refs")

    def __init__(self, site: Site, index: int) -> None:
        self.site = site
        self.pid = site.patient_id(index)
        self.subject = {"reference": f"Patient/{self.pid}"}
        self.out: list[dict[str, Any]] = []
        self.n = 0
        self.refs: dict[int, dict[str, str]] = {}

    def new_id(self) -> str:
        """A fresh resource id, unique within the site."""
        self.n += 1
        return f"{self.pid}-{self.n}"

    def add(self, resource: dict[str, Any]) -> None:
        """Append a resource."""
        self.out.append(resource)

    def link(self, resource: dict[str, Any]) -> dict[str, str]:
        """Append a resource and return a Reference to it."""
        self.out.append(resource)
        return {"reference": f"{resource['resourceType']}/{resource['id']}"}
