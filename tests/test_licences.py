"""Licence names as Openverse, Wikimedia Commons and licence URLs give them, normalised; what each
permits; and the spec's licence policy that web sources apply before downloading."""

from __future__ import annotations

import pytest

from datasetagent.licences import (
    CC0,
    PDM,
    UNKNOWN,
    USER_SUPPLIED,
    Terms,
    licence_url,
    normalise,
    terms,
)
from datasetagent.spec import LicencePolicy


@pytest.mark.parametrize(
    ("code", "version", "expected"),
    [
        ("by", "4.0", "CC-BY-4.0"),
        ("by-sa", "4.0", "CC-BY-SA-4.0"),
        ("by-nd", "2.0", "CC-BY-ND-2.0"),
        ("by-nc", "2.0", "CC-BY-NC-2.0"),
        ("by-nc-sa", "2.5", "CC-BY-NC-SA-2.5"),
        ("by-nc-nd", "3.0", "CC-BY-NC-ND-3.0"),
        ("cc0", "1.0", CC0),
        ("pdm", "1.0", PDM),
        ("by", None, "CC-BY"),  # Openverse without a version: the licence, no version invented
        ("sampling+", "1.0", UNKNOWN),  # retired CC licences the policy cannot judge
        ("nc-sampling+", "1.0", UNKNOWN),
        # a version that is no version number names no licence ("CC-BY-nc.0" was recorded)
        ("by", "nc", UNKNOWN),
        ("by", "4.0 NC", UNKNOWN),
        ("by", "../../x", UNKNOWN),
        ("by", "4", "CC-BY-4.0"),
    ],
)
def test_openverse_codes(code: str, version: str | None, expected: str) -> None:
    assert normalise(code, version) == expected


@pytest.mark.parametrize(
    ("short_name", "expected"),
    [
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("CC BY 2.0", "CC-BY-2.0"),
        ("CC BY-NC-SA 2.0", "CC-BY-NC-SA-2.0"),
        ("CC0", CC0),
        ("CC Zero", CC0),
        ("cc-zero", CC0),
        ("Public domain", PDM),
        ("PD-old", PDM),
        ("PD-US", PDM),
        ("Public Domain Mark 1.0", PDM),
        ("GFDL", UNKNOWN),
        ("GFDL 1.2", UNKNOWN),
        ("Attribution", UNKNOWN),  # Commons' own attribution template: no CC version to name
        ("Copyrighted free use", UNKNOWN),
        ("CC BY-SA 3.0 de", "CC-BY-SA-3.0-DE"),  # ported to one jurisdiction
        ("CC BY 3.0 us", "CC-BY-3.0-US"),
        ("CC BY-SA 3.0 IGO", "CC-BY-SA-3.0-IGO"),
        ("CC BY-SA 3.0,2.5,2.0,1.0", "CC-BY-SA-3.0"),  # several versions: the first names it
        ("CC BY-SA 2.5-2.0-1.0", "CC-BY-SA-2.5"),
        ("CC BY-SA 4.0 International", "CC-BY-SA-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),  # extmetadata "License"
        ("cc-by-sa-3.0-migrated", "CC-BY-SA-3.0"),
        ("Creative Commons Attribution-Share Alike 4.0", "CC-BY-SA-4.0"),  # "UsageTerms"
        ("Creative Commons Attribution-NonCommercial-NoDerivatives 4.0", "CC-BY-NC-ND-4.0"),
        ("  CC   BY 4.0 ", "CC-BY-4.0"),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_commons_short_names(short_name: str | None, expected: str) -> None:
    assert normalise(short_name) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
        ("https://creativecommons.org/licenses/by-sa/4.0", "CC-BY-SA-4.0"),
        ("https://creativecommons.org/licenses/by-sa/3.0/deed.en", "CC-BY-SA-3.0"),
        ("https://creativecommons.org/licenses/by-sa/3.0/de/deed.en", "CC-BY-SA-3.0-DE"),
        ("http://creativecommons.org/licences/by-nc/2.0/", "CC-BY-NC-2.0"),
        ("http://creativecommons.org/publicdomain/zero/1.0/deed.en", CC0),
        ("https://creativecommons.org/publicdomain/mark/1.0/", PDM),
        ("https://www.gnu.org/copyleft/fdl.html", UNKNOWN),
        ("https://creativecommons.org/licenses/sampling+/1.0/", UNKNOWN),
    ],
)
def test_licence_urls(url: str, expected: str) -> None:
    assert normalise(None, url=url) == expected


def test_a_clear_name_wins_over_its_url_and_an_unclear_one_falls_back_to_it() -> None:
    assert normalise("CC BY 4.0", url="https://creativecommons.org/licenses/by-sa/2.0/") == (
        "CC-BY-4.0"
    )
    assert normalise("Some licence", url="https://creativecommons.org/licenses/by-sa/2.0/") == (
        "CC-BY-SA-2.0"
    )
    assert normalise("by", url="https://creativecommons.org/licenses/by/3.0/") == "CC-BY-3.0"


@pytest.mark.parametrize(
    ("licence", "expected"),
    [
        (CC0, Terms(False, False, False, False)),
        (PDM, Terms(False, False, False, False)),
        ("CC-BY-4.0", Terms(True, False, False, False)),
        ("CC-BY-SA-3.0-DE", Terms(True, True, False, False)),
        ("CC-BY-SA-3.0-IGO", Terms(True, True, False, False)),
        ("CC-BY-NC-2.0", Terms(True, False, True, False)),
        ("CC-BY-ND-2.0", Terms(True, False, False, True)),
        ("CC-BY-NC-SA-2.0", Terms(True, True, True, False)),
        ("CC-BY-NC-ND-4.0", Terms(True, False, True, True)),
        ("CC-BY", Terms(True, False, False, False)),
        (UNKNOWN, None),
        (USER_SUPPLIED, None),
        ("CC-GPL-2.0", None),
    ],
)
def test_terms(licence: str, expected: Terms | None) -> None:
    assert terms(licence) == expected


@pytest.mark.parametrize(
    ("licence", "expected"),
    [
        (CC0, "https://creativecommons.org/publicdomain/zero/1.0/"),
        (PDM, "https://creativecommons.org/publicdomain/mark/1.0/"),
        ("CC-BY-SA-4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
        ("CC-BY-NC-ND-2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
        ("CC-BY-SA-3.0-DE", "https://creativecommons.org/licenses/by-sa/3.0/de/"),
        ("CC-BY", None),
        (UNKNOWN, None),
    ],
)
def test_licence_url(licence: str, expected: str | None) -> None:
    assert licence_url(licence) == expected


def test_every_url_deed_normalises_back_to_its_licence() -> None:
    for licence in ("CC-BY-2.0", "CC-BY-SA-3.0-DE", "CC-BY-NC-SA-4.0", CC0, PDM):
        url = licence_url(licence)
        assert url is not None
        assert normalise(None, url=url) == licence


@pytest.mark.parametrize(
    ("policy", "allowed"),
    [
        (LicencePolicy(), {CC0, PDM, "CC-BY-4.0", "CC-BY-SA-3.0-DE", USER_SUPPLIED}),
        (LicencePolicy(mode="permissive"), {CC0, PDM, "CC-BY-4.0", USER_SUPPLIED}),
        (
            LicencePolicy(allow_nc=True),
            {CC0, PDM, "CC-BY-4.0", "CC-BY-SA-3.0-DE", "CC-BY-NC-2.0", USER_SUPPLIED},
        ),
        (
            LicencePolicy(allow_nc=True, allow_nd=True),
            {
                CC0,
                PDM,
                "CC-BY-4.0",
                "CC-BY-SA-3.0-DE",
                "CC-BY-NC-2.0",
                "CC-BY-ND-2.0",
                "CC-BY-NC-ND-4.0",
                USER_SUPPLIED,
            },
        ),
        (
            LicencePolicy(allow_unknown=True),
            {CC0, PDM, "CC-BY-4.0", "CC-BY-SA-3.0-DE", UNKNOWN, USER_SUPPLIED},
        ),
        (
            LicencePolicy(mode="any"),
            {
                CC0,
                PDM,
                "CC-BY-4.0",
                "CC-BY-SA-3.0-DE",
                "CC-BY-NC-2.0",
                "CC-BY-ND-2.0",
                "CC-BY-NC-ND-4.0",
                UNKNOWN,
                USER_SUPPLIED,
            },
        ),
    ],
)
def test_policy_refusal(policy: LicencePolicy, allowed: set[str]) -> None:
    every = {
        CC0,
        PDM,
        "CC-BY-4.0",
        "CC-BY-SA-3.0-DE",
        "CC-BY-NC-2.0",
        "CC-BY-ND-2.0",
        "CC-BY-NC-ND-4.0",
        UNKNOWN,
        USER_SUPPLIED,
    }
    assert {lic for lic in every if policy.refusal(lic) is None} == allowed
    for lic in every - allowed:
        why = policy.refusal(lic)
        assert why is not None
        assert lic in why  # the message names the licence and the switch that would allow it
        assert "licences." in why or "permissive" in why
