"""The mailbox of ``bench/search.py``: a doctor's mail over two years, generated from a seed.

Each message is a short French clinical letter (a patient, exams, treatments, a specialty,
a town) whose words are drawn with Zipf-like weights, so some words are in a few messages and
others in thousands, as in real mail. About one message in 25 carries a PDF "compte rendu"
whose text holds words that appear nowhere else (``PDF_ONLY``): finding them proves the
attachment's text is indexed. Folders and their shares: ``FOLDERS``. About one INBOX message
in 200 is flagged \\Deleted and left unexpunged: searches must not return them (UNDELETED).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tests.search_support import message, pdf

SEED = 1717
VERSION = 1  # bump when the generated mail changes: a cached mailbox is then rebuilt
OWNER = "Marie Martin <marie.martin@mss.test>"
FOLDERS: tuple[tuple[str, float], ...] = (
    ("INBOX", 0.55), ("Sent", 0.20), ("Archives 2024", 0.12), ("Dossiers patients", 0.06),
    ("Laboratoire", 0.04), ("Trash", 0.025), ("Drafts", 0.005))

FIRST = ("Léon Louise Jules Alice Gabriel Emma Raphaël Jade Arthur Rose Louis Chloé Adam Lina "
         "Hugo Mila Maël Léa Paul Ambre Noé Anna Tom Julia Nathan Inès Lucas Zoé Victor Lou "
         "Sacha Mia Ethan Eva Martin Juliette Théo Agathe Axel Manon Marius Camille Nino Léna "
         "Antoine Romane Baptiste Margaux Mathis Clémence Éloïse Hélène Gérard Josiane Thérèse "
         "Rémi Aurélien Océane Bénédicte Françoise").split()
LAST = ("Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel "
        "Lefèvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine "
        "Rousseau Vincent Muller Lefebvre Faure André Mercier Blanc Guérin Boyer Garnier "
        "Chevalier François Legrand Gauthier Garcia Perrin Robin Clément Morin Nicolas Henry "
        "Roussel Mathieu Gautier Masson Marchand Duval Denis Dumont Marie Lemaire Noël Meyer "
        "Dufour Meunier Brun Blanchard Giraud Joly Rivière Lucas Brunet Gaillard Barbier Arnaud "
        "Martinez Gérard Roche Renard Schmitt Roy Leroux Colin Vidal Caron Picard Roger Fabre "
        "Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoît Rey "
        "Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert "
        "Berger Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher "
        "Fleury Royer Klein Jacquet Adam Paris Poirier Marty Aubry Guyot Carré Charles Renault "
        "Charpentier Ménard Maillard Baron Bertin Bailly Hervé Schneider Fernandez Collet Léger "
        "Bouvier Julien Prévost Millet Perrot Daniel Cousin Germain Breton Besson Langlois Rémy "
        "Pelletier Lévêque Perrier Leblanc Barré Lebrun Marchal Weber Mallet Hamon Boulanger "
        "Jacob Monnier Michaud Rodriguez Guichard Gillet Étienne Grondin Poulain Tessier "
        "Chevallier Collin Chauvin Bouchet Gay Lemaître Bénard Maréchal Humbert Reynaud Antoine "
        "Hoarau Perret Barthélemy Cordier Pichon Lejeune Gilbert Lamy Delaunay Pasquier Carlier "
        "Laporte").split()
SPECIALTIES = ("cardiologie pneumologie dermatologie néphrologie neurologie gastro-entérologie "
               "endocrinologie rhumatologie gériatrie pédiatrie gynécologie urologie "
               "ophtalmologie oncologie hématologie psychiatrie radiologie orthopédie "
               "allergologie infectiologie diabétologie angiologie stomatologie").split()
EXAMS = ("échographie scanner IRM coloscopie fibroscopie électrocardiogramme holter "
         "scintigraphie mammographie radiographie spirométrie biopsie ponction "
         "doppler densitométrie audiogramme électroencéphalogramme endoscopie "
         "échocardiographie polysomnographie hémogramme ionogramme").split()
DRUGS = ("amoxicilline metformine bisoprolol apixaban lévothyroxine paracétamol ibuprofène "
         "atorvastatine ramipril amlodipine furosémide oméprazole lansoprazole prednisolone "
         "salbutamol budésonide insuline sitagliptine clopidogrel warfarine rivaroxaban "
         "tramadol codéine morphine sertraline escitalopram alprazolam zolpidem "
         "méthotrexate hydroxychloroquine allopurinol colchicine spironolactone "
         "losartan valsartan périndopril indapamide doxycycline azithromycine "
         "ciprofloxacine lévofloxacine fluconazole aciclovir valaciclovir tamsulosine "
         "finastéride alendronate denosumab vitamine").split()
FINDINGS = ("hypertension, diabète, insuffisance cardiaque, fibrillation auriculaire, asthme, "
            "bronchopneumopathie, anémie, hypothyroïdie, arthrose, lombalgie, migraine, "
            "dépression, anxiété, insomnie, obésité, dyslipidémie, goutte, ostéoporose, cystite, "
            "pyélonéphrite, pneumonie, bronchite, sinusite, otite, angine, eczéma, psoriasis, "
            "urticaire, zona, vertiges, syncope, palpitations, dyspnée, toux, fièvre, "
            "douleur thoracique, œdème, malaise, chute, confusion, amaigrissement").split(", ")
TOWNS = ("Pau Bayonne Biarritz Anglet Oloron Orthez Tarbes Lourdes Dax Mont-de-Marsan "
         "Bordeaux Toulouse Lyon Nantes Rennes Lille Strasbourg Montpellier Nice Marseille "
         "Grenoble Dijon Tours Angers Limoges Poitiers Perpignan Nîmes Brest Caen").split()
# Words of the PDF reports only: never in a subject or a text part.
PDF_ONLY = ("créatininémie kaliémie natrémie troponine ferritine procalcitonine "
            "hémoglobine-glyquée transaminases bilirubine fibrinogène").split()
SENTENCES = (
    "Je vous adresse {patient}, suivi(e) pour {finding}, pour avis en {specialty}.",
    "Examen réalisé le {day} ({exam}) : sans particularité notable.",
    "Le traitement par {drug} a été débuté puis ajusté à la dose minimale efficace.",
    "Pouvez-vous revoir {patient} en consultation à {town} dans les prochaines semaines ?",
    "Nous avons noté une évolution favorable de la {finding} sous {drug}.",
    "Je vous remercie de me tenir informé des suites de la prise en charge.",
    "Un contrôle par {exam} est prévu dans trois mois.",
    "Antécédents : {finding}, {finding2}. Allergie connue à la {drug2}.",
    "Le bilan biologique est rassurant ; pas de modification du traitement.",
    "Merci de renouveler l'ordonnance de {drug} pour trois mois.",
    "La patiente signale une majoration de sa {finding} depuis quinze jours.",
    "Je reste à votre disposition pour tout renseignement complémentaire.",
    "Vous trouverez ci-joint le compte rendu ({exam}) du {day}.",
    "Orientation vers le service de {specialty} du centre hospitalier de {town}.",
)
SUBJECTS = ("Compte rendu ({exam}) — {patient}", "Demande d'avis en {specialty}",
            "Résultats de {exam}", "RE: {patient}, {finding}", "Ordonnance {drug}",
            "Suivi de {patient}", "Rendez-vous à {town}", "TR: résultats {patient}")


@functools.cache
def _cumulative(count: int, skew: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** skew for rank in range(count)))


@dataclass(frozen=True)
class Draw:
    """Weighted choices over the vocabulary (Zipf-like: a few frequent words, many rare)."""

    rng: random.Random

    def pick(self, words: Sequence[str], skew: float = 1.0) -> str:
        return self.rng.choices(words, cum_weights=_cumulative(len(words), skew))[0]

    def patient(self) -> str:
        return (f"{self.rng.choice(('Mme', 'M.'))} {self.pick(FIRST, 0.6)} "
                f"{self.pick(LAST, 0.9)}")


@dataclass(frozen=True)
class Generated:
    folder: str
    raw: bytes
    flags: tuple[str, ...]
    when: datetime


def _fill(template: str, draw: Draw, day: str) -> str:
    return template.format(
        patient=draw.patient(), finding=draw.pick(FINDINGS), finding2=draw.pick(FINDINGS),
        specialty=draw.pick(SPECIALTIES), exam=draw.pick(EXAMS), drug=draw.pick(DRUGS),
        drug2=draw.pick(DRUGS), town=draw.pick(TOWNS), day=day)


def _colleague(draw: Draw) -> str:
    first, last = draw.pick(FIRST, 0.5), draw.pick(LAST, 0.7)
    local = f"{first}.{last}".lower().replace(" ", "-")
    return f"Dr {first} {last} <{local}@chu-{draw.pick(TOWNS, 0.8).lower()}.mss.test>"


def messages(count: int, seed: int = SEED) -> Iterator[Generated]:
    """``count`` messages, oldest first over the two years before 2026-11-30."""
    rng = random.Random(seed)
    draw = Draw(rng)
    start = datetime(2024, 12, 1, 8, tzinfo=UTC)
    step = timedelta(days=730) / max(count, 1)
    names = [f for f, _ in FOLDERS]
    shares = [s for _, s in FOLDERS]
    for i in range(count):
        when = start + step * i + timedelta(seconds=rng.randrange(600))
        folder = rng.choices(names, weights=shares)[0]
        day = f"{when:%d/%m/%Y}"
        body = "Chère consœur, cher confrère,\n\n" + "\n".join(
            _fill(rng.choice(SENTENCES), draw, day) for _ in range(rng.randint(5, 14)))
        body += f"\n\nBien confraternellement,\n{_colleague(draw).split(' <')[0]}\n"
        subject = _fill(rng.choice(SUBJECTS), draw, day)
        other = _colleague(draw)
        sender, to = (OWNER, other) if folder in ("Sent", "Drafts") else (other, OWNER)
        attachment = _report(draw, i) if rng.random() < 0.04 else None
        raw = message(subject, body, sender=sender, to=to,
                      date=when.strftime("%a, %d %b %Y %H:%M:%S +0000"),
                      message_id=f"bench-{seed}-{i}@mss.test", attachment=attachment)
        flags = ["\\Seen"] if rng.random() < 0.8 else []
        if folder == "INBOX" and rng.random() < 0.005:
            flags.append("\\Deleted")
        if folder == "Drafts":
            flags.append("\\Draft")
        yield Generated(folder, raw, tuple(flags), when)


def _report(draw: Draw, index: int) -> tuple[str, bytes]:
    lines = [f"Compte rendu n° {index:06d}", f"Patient : {draw.patient()}",
             f"Examen : {draw.pick(EXAMS)}"]
    lines += [f"{draw.pick(PDF_ONLY, 0.5)} : {draw.rng.randint(1, 400)} unités"
              for _ in range(3)]
    return f"compte-rendu-{index:06d}.pdf", pdf(lines)


def queries() -> list[tuple[str, str]]:
    """The searches measured, as (kind, text): rare to frequent words of every family,
    accents typed or not, two-word queries, and words found only in PDF attachments."""
    found = [("nom rare", name) for name in LAST[60:200:14]]
    found += [("nom fréquent", name) for name in LAST[1:10:2]]
    found += [("médicament", drug) for drug in DRUGS[::5]]
    found += [("examen", exam) for exam in EXAMS[::4]]
    found += [("spécialité", s) for s in SPECIALTIES[::5]]
    found += [("sans accents", "echographie"), ("sans accents", "lévothyroxine".replace(
        "é", "e")), ("sans accents", "gastro-enterologie")]
    found += [("deux mots", f"{LAST[i * 7 + 3]} {DRUGS[i * 3 + 1]}") for i in range(5)]
    found += [("pièce jointe PDF", word) for word in PDF_ONLY[::2]]
    kinds: dict[str, list[tuple[str, str]]] = {}
    for item in found:
        kinds.setdefault(item[0], []).append(item)
    # Round robin over the kinds, so that any run of consecutive searches mixes them all.
    return [group[i] for i in range(max(map(len, kinds.values())))
            for group in kinds.values() if i < len(group)]
