"""Codes: standard meanings match PS3.16, private codes are well formed."""

from __future__ import annotations

import re

import pytest
from pydicom.sr import _concepts_dict

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, AnatomyValues, NotAssessedReasonValues
from sr_templates import codes

_SCHEMES = {"SCT", "DCM", "LN", "UCUM", "UMLS"}


def _ps3_16_meanings(scheme: str, value: str) -> set[str]:
    meanings = set()
    for by_value in _concepts_dict.concepts.get(scheme, {}).values():
        if value in by_value:
            meaning = by_value[value][0]
            meanings.add(meaning.lower())
            meanings.add(re.sub(r" \([^)]*\)$", "", meaning).lower())
    return meanings


STANDARD = sorted(
    {(c.scheme_designator, c.value, c.meaning) for c in codes.all_codes()
     if c.scheme_designator in _SCHEMES}
)


@pytest.mark.parametrize(("scheme", "value", "meaning"), STANDARD)
def test_standard_code_meaning_matches_ps3_16(scheme: str, value: str, meaning: str) -> None:
    found = _ps3_16_meanings(scheme, value)
    if (scheme, value) in codes.NOT_IN_PS3_16:
        assert not found, f"{scheme} {value} is in PS3.16 after all: check its meaning"
    else:
        assert meaning.lower() in found, f"{scheme} {value}: {meaning!r} not in {found}"


def test_private_codes_are_short_and_in_the_private_scheme() -> None:
    private = [c for c in codes.all_codes() if c.scheme_designator not in _SCHEMES]
    assert private
    for code in private:
        assert code.scheme_designator == codes.PRIVATE_SCHEME
        assert len(code.value) <= 16, code.value
        assert 0 < len(code.meaning) <= 64, code.meaning


def test_every_class_has_a_code_and_a_distinct_probability_code() -> None:
    classes = set(LIVER_CLASSES) | set(BREAST_CLASSES)
    values = {codes.class_probability(label).value for label in classes}
    assert len(values) == len(classes)
    for label in classes:
        assert codes.lesion_class(label).scheme_designator == "SCT"


def test_every_not_assessed_reason_has_a_distinct_code() -> None:
    values = {codes.not_assessed_reason(r).value for r in NotAssessedReasonValues}
    assert len(values) == len(NotAssessedReasonValues)


def test_unknown_class_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Unknown lesion class"):
        codes.lesion_class("gallstone")


def test_other_anatomy_has_no_finding_site() -> None:
    assert codes.finding_site(AnatomyValues.HEART) == codes.HEART
    with pytest.raises(ValueError, match="No finding site"):
        codes.finding_site(AnatomyValues.OTHER)
