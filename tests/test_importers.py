"""CSV and whitelist imports, whitelist export, FHIR directory export/import."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Database
from trust_space.directory import (
    new_organisational_mailbox,
    new_personal_mailbox,
    publish,
    search,
    upsert_professional,
    upsert_structure,
)
from trust_space.errors import ImportFailed
from trust_space.fhir import EXT_SMIME, OID_FINESS, OID_IDNPS, export_directory, import_directory
from trust_space.importers import import_professionals, import_structures
from trust_space.models import (
    Mailbox,
    MailboxKind,
    Operator,
    Professional,
    Structure,
    TrustedDomain,
)
from trust_space.whitelist import (
    diff_whitelist,
    export_whitelist,
    import_whitelist,
    local_entry,
    parse_whitelist,
    render_whitelist,
)

HEADER = ("rpps;adeli;civilite;prenom;nom;profession;specialite;email;mobile;telephone;"
          "lieu_exercice;adresse;code_postal;ville")
PROS = (
    HEADER + "\n"
    "10000000001;;Dr;Éloïse;Lefèvre;Médecin;Cardiologie;eloise@example.fr;06 12 34 56 78;;"
    "Cabinet du Parc;1 rue du Parc;64000;Pau\n"
    ";641234567;Mme;Sophie;Petit;Infirmier;;;;05 59 00 00 00;;;64100;Bayonne\n"
)


def _count(s: Session, model: type) -> int:
    return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_csv_professionals_semicolon_bom_and_upsert(db: Database) -> None:
    seen: list[int] = []
    with db.transaction() as s:
        summary = import_professionals(s, ("\ufeff" + PROS).encode(), progress=seen.append)
        assert (summary.created, summary.updated, summary.unchanged) == (2, 0, 0)
        assert seen == [1, 2]
    with db.transaction() as s:
        eloise = s.execute(select(Professional).where(Professional.rpps == "10000000001")
                           ).scalar_one()
        assert (eloise.first_name, eloise.specialty, eloise.mobile, eloise.postal_code) == \
            ("Éloïse", "Cardiologie", "06 12 34 56 78", "64000")
        # Same file again: unchanged; a comma file with fewer columns updates only those.
        assert import_professionals(s, PROS).unchanged == 2
        update = ("PRÉNOM,Nom,Profession,ADELI,Ville\n"
                  "Sophie,Petit-Durand,Infirmier,641234567,Biarritz\n")
        assert import_professionals(s, update.encode()).updated == 1
        sophie = s.execute(select(Professional).where(Professional.adeli == "641234567")
                           ).scalar_one()
        assert (sophie.last_name, sophie.city, sophie.postal_code) == \
            ("Petit-Durand", "Biarritz", "64100")


def test_csv_errors_with_lines_and_nothing_written(db: Database) -> None:
    bad = (
        HEADER + "\n"
        "10000000001;;Dr;Éloïse;Lefèvre;Médecin;;;;;;;64000;Pau\n"  # line 2: fine
        "123;;;Jean;Valjean;Médecin;;;;;;;64000;Pau\n"  # line 3
        "\n"  # line 4: blank, skipped
        "10000000001;;;Marie;---;Médecin;;pas-une-adresse;06;;;;6400;Pau\n"  # line 5
        ";;;Paul;Durand;;;;;;;;;\n"  # line 6
        "10000000009;;;Trop;Court\n"  # line 7
    )
    with db.transaction() as s:
        with pytest.raises(ImportFailed) as info:
            import_professionals(s, bad.encode())
        assert _count(s, Professional) == 0
    got = [str(e) for e in info.value.errors]
    assert got == [
        "ligne 3, rpps : doit comporter 11 chiffres",
        "ligne 5, nom : doit contenir au moins une lettre ou un chiffre",
        "ligne 5, email : adresse électronique invalide",
        "ligne 5, mobile : numéro de téléphone invalide",
        "ligne 5, code_postal : doit comporter 5 chiffres",
        "ligne 5, rpps : en double (déjà ligne 2)",
        "ligne 6, profession : valeur obligatoire",
        "ligne 6, rpps : RPPS ou ADELI obligatoire",
        "ligne 7 : 5 colonnes au lieu de 14",
    ]
    assert "rien n'a été enregistré" in str(info.value)
    assert "ligne 3, rpps : doit comporter 11 chiffres" in str(info.value)


def test_csv_header_problems_and_structures(db: Database) -> None:
    with db.transaction() as s:
        for data, expected in [
            ("prenom;nom;profession;rpps;chaussure\n", "ligne 1, chaussure : colonne inconnue"),
            ("prenom;nom;rpps\n", "ligne 1, profession : colonne obligatoire absente"),
            ("prenom;nom;profession\n", "ligne 1, rpps : colonne rpps ou adeli obligatoire"),
            ("", "ligne 1 : ligne d'en-tête absente"),
        ]:
            with pytest.raises(ImportFailed) as info:
                import_professionals(s, data)
            assert [str(e) for e in info.value.errors] == [expected]
        with pytest.raises(ImportFailed, match="UTF-8"):
            import_professionals(s, "prénom;nom\n".encode("latin-1"))
        structures = ("finess,nom,adresse,code_postal,ville\n"
                      "640000001,Pharmacie du Centre,2 place Clemenceau,64000,Pau\n"
                      '640000002,"Clinique des Pins, Pau",,64000,Pau\n')
        assert import_structures(s, structures.encode("utf-8-sig")).created == 2
        with pytest.raises(ImportFailed) as info:
            import_structures(s, structures + "640000001,Doublon,,64000,Pau\n12,X,,,\n")
        assert [str(e) for e in info.value.errors] == [
            "ligne 4, finess : en double (déjà ligne 2)",
            "ligne 5, finess : doit comporter 9 chiffres",
        ]
        # Conflicts with the database: two people merged, an identity rewritten.
        upsert_professional(s, rpps="10000000001", first_name="A", last_name="A")
        upsert_professional(s, rpps="10000000002", adeli="641234567", first_name="B",
                            last_name="B")
        data = ("rpps;adeli;prenom;nom;profession\n"
                "10000000001;641234567;A;A;Médecin\n"  # ADELI held by B
                "10000000003;641234567;C;C;Médecin\n"  # B's ADELI with another RPPS
                ";641234567;B;B;Médecin\n")  # fine alone, but B is also line 3's target
        with pytest.raises(ImportFailed) as info:
            import_professionals(s, data)
        assert [str(e) for e in info.value.errors] == [
            "ligne 2, adeli : déjà attribué à un autre professionnel",
            "ligne 3, adeli : en double (déjà ligne 2)",
            "ligne 3, rpps : l'ADELI 641234567 est associé au RPPS 10000000002",
            "ligne 4, adeli : en double (déjà ligne 2)",
            "ligne 4, rpps : même professionnel que la ligne 3",
        ]


# ------------------------------------------------------------------ whitelist
NS = "https://listeblanche.mssante.fr/schema"


def _domaine(name: str, dn: str = "CN=relay.pair.test, O=Pair Santé, C=FR",
             date: str = "2024-05-01T10:00:00Z", description: str = "Opérateur pair") -> str:
    return (f"  <Domaine>\n    <Nom>{name}</Nom>\n    <Description>{description}</Description>\n"
            f"    <DNCertificatOperateur>{dn}</DNCertificatOperateur>\n"
            "    <ResponsableContact>resp@pair.test</ResponsableContact>\n"
            "    <SupportContact>support@pair.test</SupportContact>\n"
            f"    <DateMAJ>{date}</DateMAJ>\n  </Domaine>\n")


def _liste(*domaines: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListeBlanche xmlns="{NS}">\n'
            + "".join(domaines) + "</ListeBlanche>\n").encode()


def _state(s: Session) -> dict[str, tuple[str, str, str | None]]:
    return {td.domain: (td.operator.name, td.description, td.relay_host)
            for td in s.execute(select(TrustedDomain)).scalars()}


def test_whitelist_import_diff_and_replace(db: Database) -> None:
    first = _liste(_domaine("pair.test"), _domaine("mss.pair.test"),
                   _domaine("autre.test", dn="CN=mx.autre.test,O=Autre"), _domaine("mss.test"))
    with db.transaction() as s:
        diff = import_whitelist(s, first, local_domains={"mss.test"})
        assert diff.added == ("pair.test", "mss.pair.test", "autre.test")
        assert diff.ignored == ("mss.test",) and not diff.removed and not diff.changed
        assert _count(s, Operator) == 2
        op = s.execute(select(Operator).where(Operator.name == "Pair Santé")).scalar_one()
        assert op.certificate_dn == "CN=relay.pair.test,O=Pair Santé,C=FR"
        td = s.execute(select(TrustedDomain).where(TrustedDomain.domain == "pair.test")
                       ).scalar_one()
        td.relay_host, td.relay_port = "127.0.0.1", 2526
        assert td.updated_at is not None and td.updated_at.isoformat() == \
            "2024-05-01T10:00:00+00:00"
    second = _liste(_domaine("pair.test", date="2024-06-01", description="Nouveau"),
                    _domaine("mss.pair.test"), _domaine("neuf.test"))
    with db.transaction() as s:
        dry = diff_whitelist(s, second)
        assert (dry.added, dry.removed) == (("neuf.test",), ("autre.test",))
        assert dry.changed == {"pair.test": ("Description", "DateMAJ")}
        assert "autre.test" in _state(s)  # dry run changed nothing
        assert import_whitelist(s, second) == dry
    with db.transaction() as s:
        assert _state(s) == {"pair.test": ("Pair Santé", "Nouveau", "127.0.0.1"),
                             "mss.pair.test": ("Pair Santé", "Opérateur pair", None),
                             "neuf.test": ("Pair Santé", "Opérateur pair", None)}
        assert import_whitelist(s, _liste(_domaine("x.test")), replace=False).removed == ()
        assert diff_whitelist(s, second, replace=False).added == ()


@pytest.mark.parametrize(("xml", "message"), [
    (b"<ListeBlanche><Domaine>", "XML mal formé"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
     b'<ListeBlanche xmlns="' + NS.encode() + b'">&lol2;</ListeBlanche>', "DOCTYPE"),
    (b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>', "DOCTYPE"),
    (b"<ListeBlanche><Domaine><Nom>a.test</Nom></Domaine></ListeBlanche>",
     "ligne 1, Domaine : élément hors de l'espace de noms"),
    (_liste(), "aucun élément Domaine"),
    (_liste(_domaine("pair.test", dn="")), "ligne 3, DNCertificatOperateur : élément obligatoire"),
    (_liste(_domaine("")), "ligne 3, Nom : élément obligatoire manquant"),
    (_liste(_domaine("pas un domaine")), "ligne 3, Nom : nom de domaine invalide"),
    (_liste(_domaine("pair.test", dn="n'importe quoi")), "DNCertificatOperateur : DN invalide"),
    (_liste(_domaine("pair.test", date="hier")), "ligne 3, DateMAJ : date invalide"),
    (_liste(_domaine("pair.test"), _domaine("PAIR.test")), "ligne 11, Nom : domaine en double"),
])
def test_whitelist_refusals_change_nothing(sqlite_db: Database, xml: bytes, message: str) -> None:
    with sqlite_db.transaction() as s:
        import_whitelist(s, _liste(_domaine("avant.test")))
    with sqlite_db.transaction() as s:
        with pytest.raises(ImportFailed, match=message):
            import_whitelist(s, xml)
        assert list(_state(s)) == ["avant.test"]


def test_whitelist_export_round_trip(db: Database) -> None:
    own = local_entry("mss.test", "CN=relay.mss.test,O=MSS Démo,C=FR",
                      description="Opérateur de démonstration",
                      support_contact="support@mss.test")
    with db.transaction() as s:
        import_whitelist(s, _liste(_domaine("pair.test")))
        exported = export_whitelist(s, own=[own])
        assert exported.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<ListeBlanche xmlns=")
        entries = parse_whitelist(exported)
        assert [e.domain for e in entries] == ["mss.test", "pair.test"]
        assert entries[0] == own
        assert import_whitelist(s, exported, local_domains={"mss.test"}).is_empty
    peer = render_whitelist([own])
    assert parse_whitelist(peer) == [own]


# ------------------------------------------------------------------ FHIR directory
CERT_DER = b"0\x82\x01\x00fake-der-for-transport-only"
CERT_PEM = ("-----BEGIN CERTIFICATE-----\n" + base64.b64encode(CERT_DER).decode()
            + "\n-----END CERTIFICATE-----\n")


def _local_directory(s: Session) -> None:
    pharmacie, _ = upsert_structure(s, finess="640000001", name="Pharmacie du Centre",
                                    address="2 place Clemenceau", postal_code="64000", city="Pau")
    for rpps, first, last, flags in [("10000000001", "Éloïse", "Lefèvre", "mobile"),
                                     ("10000000002", "Marc", "Lefebvre", ""),
                                     ("10000000003", "Luc", "Secret", "rouge"),
                                     ("10000000004", "Paul", "Attente", "pending")]:
        pro, _ = upsert_professional(s, rpps=rpps, first_name=first, last_name=last,
                                     profession="Médecin", specialty="Cardiologie",
                                     mobile="06 12 34 56 78")
        box = new_personal_mailbox(s, pro, "mss.test")
        box.structure = pharmacie if first == "Éloïse" else None
        box.mobile_published, box.liste_rouge = flags == "mobile", flags == "rouge"
        box.smime_cert_pem = CERT_PEM if first == "Éloïse" else None
        if flags != "pending":
            publish(s, box)
    publish(s, new_organisational_mailbox(s, pharmacie, "pharma", "du Centre", "mss.test"))


def test_fhir_export_and_peer_import(db: Database) -> None:
    with db.transaction() as s:
        _local_directory(s)
        bundle = json.loads(json.dumps(export_directory(s, domain="mss.test")))
    text = json.dumps(bundle, ensure_ascii=False)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert "secret" not in text.lower() and "attente" not in text.lower()
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert sorted(kinds) == ["Organization", "Practitioner", "Practitioner",
                             "PractitionerRole", "PractitionerRole"]
    resources = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    eloise = resources["pra-810000000001"]
    assert eloise["identifier"][0]["system"] == OID_IDNPS
    assert eloise["identifier"][0]["value"] == "810000000001"
    assert [t["system"] for t in eloise["telecom"]] == ["email", "phone"]
    assert text.count("06 12 34 56 78") == 1  # Marc did not publish his mobile
    assert any(x["url"] == EXT_SMIME for x in eloise["telecom"][0]["extension"])
    org = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] ==
               "Organization")
    assert org["identifier"] == [{"system": OID_FINESS, "value": "640000001"}]
    assert org["telecom"][0]["value"] == "pharma.ducentre.64000@mss.test"

    with db.transaction() as s:  # the same bundle seen by a peer that trusts mss.test
        for box in s.execute(select(Mailbox)).scalars():
            s.delete(box)
        s.flush()
        import_whitelist(s, _liste(_domaine("mss.test", dn="CN=relay.mss.test,O=MSS")))
        operator = s.execute(select(Operator)).scalar_one()
        result = import_directory(s, bundle, operator=operator)
        assert (result.created, result.updated, result.removed) == (3, 0, 0)
        boxes = {m.address: m for m in s.execute(select(Mailbox)).scalars()}
        assert boxes["eloise.lefevre@mss.test"].smime_cert_pem == CERT_PEM
        assert boxes["pharma.ducentre.64000@mss.test"].kind is MailboxKind.ORGANISATIONAL
        assert all(m.operator_id == operator.id for m in boxes.values())
        assert [e.address for e in search(s, name="eloise")] == ["eloise.lefevre@mss.test"]
        bundle["entry"] = bundle["entry"][:1]
        assert import_directory(s, bundle, operator=operator).removed == 2
        with pytest.raises(ImportFailed, match="hors de la liste blanche"):
            import_directory(s, bundle, operator=Operator(id=999, name="Intrus",
                                                          certificate_dn="CN=x"))


def test_csv_unreadable(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as s:
        with pytest.raises(ImportFailed) as info:
            import_structures(s, 'finess,nom\n640000001,"Pharmacie\n')
        assert str(info.value.errors[0]).startswith("ligne 2 : CSV illisible")
        with pytest.raises(ImportFailed) as info:
            import_structures(s, 'finess,nom,adresse\n640000002,A,"1 rue\r\nBP 2"\n'
                                 '640000001,"Pharma\x00cie",\n')
        assert [str(e) for e in info.value.errors] == [
            "ligne 4, nom : caractère de contrôle interdit"]
        import_structures(s, 'finess,nom,adresse\n640000002,A,"1 rue\r\nBP 2"\n')
        assert s.execute(select(Structure.address)).scalar_one() == "1 rue BP 2"


def test_fhir_import_refuses_bad_bundles(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as s:
        import_whitelist(s, _liste(_domaine("pair.test")))
        operator = s.execute(select(Operator)).scalar_one()

        def telecom(value: str, cert: object = None) -> dict[str, object]:
            ext = [{"url": EXT_SMIME, "valueBase64Binary": cert}] if cert is not None else []
            return {"system": "email", "value": value, "extension": ext}

        cases: list[tuple[dict[str, Any], str]] = [
            ({"resourceType": "Patient"}, "un Bundle FHIR est attendu"),
            ({"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "Practitioner", "telecom": "oops"}}]}, "mal formé"),
            ({"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "Practitioner",
                "telecom": [telecom("a@pair.test", cert="%%%")]}}]}, "certificat S/MIME"),
            ({"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "Organization",
                "telecom": [telecom("a b@pair.test"), telecom("x@pair.test"),
                            telecom("x@pair.test")]}}]}, "adresse invalide"),
        ]
        for bundle, message in cases:
            with pytest.raises(ImportFailed, match=message):
                import_directory(s, bundle, operator=operator)
        assert _count(s, Mailbox) == 0
