"""Address naming rules and identifiers (pure functions)."""

from __future__ import annotations

import pytest

from trust_space.errors import NamingError, TrustSpaceError
from trust_space.naming import (
    dn_attribute,
    fold,
    national_id,
    normalise_dn,
    organisational_address,
    parse_national_id,
    personal_address,
    validate_adeli,
    validate_finess,
    validate_postal_code,
    validate_rpps,
)

D = "mss.test"


@pytest.mark.parametrize(("first", "last", "expected"), [
    ("Éloïse", "Lefèvre", "eloise.lefevre"),
    ("Jean-Pierre", "D'Artagnan", "jeanpierre.dartagnan"),
    ("Marie Claire", "de la Fontaine", "marieclaire.delafontaine"),
    ("Laëtitia", "Cœur", "laetitia.coeur"),
    ("Ægidius", "Strauß", "aegidius.strauss"),
    ("François", "Garçon", "francois.garcon"),
    ("  ANNE ", "O’NEIL", "anne.oneil"),
    ("Zoé", "Dupont 2", "zoe.dupont2"),
])
def test_personal_address_cleans_parts(first: str, last: str, expected: str) -> None:
    assert personal_address(first, last, D, set()) == f"{expected}@{D}"


def test_personal_collisions_get_2_then_3() -> None:
    taken = {"marie.martin@mss.test"}
    assert personal_address("Marie", "Martin", D, taken) == "marie.martin2@mss.test"
    taken.add("MARIE.MARTIN2@mss.test")  # compared without case
    assert personal_address("Marie", "Martin", D, taken) == "marie.martin3@mss.test"
    assert personal_address("Marie", "Martin", "autre.test", taken) == "marie.martin@autre.test"


def test_organisational_address_and_collision() -> None:
    assert organisational_address("pharma", "du Centre", "64000", D, set()) == \
        "pharma.ducentre.64000@mss.test"
    taken = {"pharma.ducentre.64000@mss.test"}
    assert organisational_address("pharma", "du Centre", "64000", D, taken) == \
        "pharma.ducentre2.64000@mss.test"
    assert organisational_address("Pharma", "Durand", " 64000 ", "MSS.Test", set()) == \
        "pharma.durand.64000@mss.test"


@pytest.mark.parametrize("code", ["6400", "64 000", "ABCDE", "640000", "", "６４０００"])
def test_bad_postal_codes(code: str) -> None:
    with pytest.raises(NamingError, match="code postal"):
        organisational_address("pharma", "du Centre", code, D, set())


@pytest.mark.parametrize(("first", "last"), [("---", "Martin"), ("Marie", "'"), ("", "X")])
def test_empty_parts_are_errors(first: str, last: str) -> None:
    with pytest.raises(NamingError) as info:
        personal_address(first, last, D, set())
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TrustSpaceError)
    assert "aucune lettre ni chiffre" in str(info.value)


@pytest.mark.parametrize("domain", ["", "localhost", "mss..test", "-mss.test", "mss_x.test",
                                    "a@b.test", "é.test"])
def test_bad_domains(domain: str) -> None:
    with pytest.raises(NamingError, match="domaine invalide"):
        personal_address("Marie", "Martin", domain, set())


def test_local_part_over_64_characters_refused() -> None:
    with pytest.raises(NamingError, match="trop longue"):
        personal_address("A" * 40, "B" * 30, D, set())


def test_fold_keeps_separators() -> None:
    assert fold("Éloïse LEFÈVRE-Œuf") == "eloise lefevre-oeuf"


def test_identifiers() -> None:
    assert validate_rpps(" 10000000001 ") == "10000000001"
    assert validate_adeli("641234567") == "641234567"
    assert validate_finess("640000001") == "640000001"
    assert validate_postal_code("64000") == "64000"
    for check, bad in ((validate_rpps, "1000000000"), (validate_rpps, "1000000000a"),
                       (validate_adeli, "12345678"), (validate_finess, "1234567890")):
        with pytest.raises(NamingError) as info:
            check(bad)
        assert info.value.reason.startswith("doit comporter")


def test_national_id() -> None:
    assert national_id("10000000001", None) == "810000000001"
    assert national_id(None, "641234567") == "0641234567"
    assert national_id("10000000001", "641234567") == "810000000001"
    with pytest.raises(NamingError):
        national_id(None, "")
    assert parse_national_id("810000000001") == ("rpps", "10000000001")
    assert parse_national_id("0641234567") == ("adeli", "641234567")
    assert parse_national_id("marie.martin@mss.test") is None
    assert parse_national_id("910000000001") is None


def test_normalise_dn() -> None:
    assert normalise_dn(" cn=relay.pair.test, o=Pair Santé ,C=FR") == \
        "CN=relay.pair.test,O=Pair Santé,C=FR"
    assert normalise_dn(r"CN=x,O=Durand\, fils") == r"CN=x,O=Durand\, fils"
    assert dn_attribute(r"CN=x,O=Durand\, fils", "o") == "Durand, fils"
    for bad in ("", "relay", "CN=", "=x"):
        with pytest.raises(NamingError):
            normalise_dn(bad)


def test_profession_labels_in_the_feminine_where_the_civility_says_so() -> None:
    """Issue #15 item 9: Julie (Mme, infirmière) was shown as "Infirmier"."""
    from trust_space.naming import profession_label

    assert profession_label("Infirmier", "Mme") == "Infirmière"
    assert profession_label("Pharmacien", "Mme") == "Pharmacienne"
    assert profession_label("Médecin", "Mme") == "Médecin"
    assert profession_label("Infirmier", "M.") == "Infirmier"
    assert profession_label("Infirmier", "Dr") == "Infirmier"
